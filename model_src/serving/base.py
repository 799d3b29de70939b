"""What the serving modules share: the error they raise, the model being served, the defaults."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from model_src.names import SERVER_API_KEY_ENV, VLLM_API_KEY_ENV

DEFAULT_VENV = ".venv-serve"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


class ServingError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServedModel:
    path: Path          # the HF folder handed to vLLM
    name: str           # the OpenAI `model` name clients use
    source: str         # where it came from, for people


def auth_headers() -> dict[str, str]:
    """`Authorization: Bearer <key>` when THINKPIPE_VLLM_API_KEY is set (a cluster's servers ask for it)."""
    key = os.environ.get(VLLM_API_KEY_ENV, "")
    return {"Authorization": f"Bearer {key}"} if key else {}


def authorized(header: str | None) -> bool:
    """A server's check of a request's Authorization header against its VLLM_API_KEY (none set: open,
    as on loopback)."""
    key = os.environ.get(SERVER_API_KEY_ENV, "")
    return not key or hmac.compare_digest((header or "").encode(), f"Bearer {key}".encode())
