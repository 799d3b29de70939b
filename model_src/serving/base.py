"""What the serving modules share: the error they raise, the model being served, the defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
