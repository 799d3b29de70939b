"""A small OpenAI-API client over the standard library (the training venv never imports vllm).

One URL convention: the API's base URL ends in `/v1`, as OpenAI clients expect and as
`thinkpipe serve` prints it; `openai_base_url` also accepts the server's root.

    >>> api_url("127.0.0.1", 8000)
    'http://127.0.0.1:8000/v1'
    >>> openai_base_url("http://127.0.0.1:8000/"), openai_base_url("http://127.0.0.1:8000/v1/")
    ('http://127.0.0.1:8000/v1', 'http://127.0.0.1:8000/v1')
"""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from model_src.serving.base import ServingError, auth_headers


def api_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/v1"


def openai_base_url(url: str) -> str:
    """`http://HOST:PORT/v1` from itself or from the server's root `http://HOST:PORT`."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


@dataclass(frozen=True)
class ChatReply:
    text: str
    token_ids: list[int] | None          # vLLM's `return_token_ids` extension
    prompt_token_ids: list[int] | None
    finish_reason: str
    usage: dict
    logprobs: list[float] | None = None  # of each generated token, when asked for


def image_data_url(image) -> str:
    """A PIL image, or PNG/JPEG bytes, as a base64 data URL (PNG for PIL: lossless)."""
    if isinstance(image, (bytes, bytearray)):
        data, mime = bytes(image), "image/jpeg" if bytes(image[:3]) == b"\xff\xd8\xff" else "image/png"
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data, mime = buffer.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat_messages(image, question: str) -> list[dict]:
    """One user turn, image first, the way the training prompts put it (model_src.model.inputs.chat_prompt)."""
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_data_url(image)}},
                                         {"type": "text", "text": question}]}]


def chat_completion(url: str, body: dict, headers: dict[str, str], timeout_s: float) -> dict:
    """POST `body` to the API's `/chat/completions`; the reply's JSON. An HTTP error is a
    ServingError with the server's message; a connection failure or timeout raises as urllib does."""
    base_url = openai_base_url(url)
    request = urllib.request.Request(base_url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        raise ServingError(f"{base_url}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:2000]}") from exc


def chat(url: str, model: str, image, question: str, *, max_tokens: int = 32, temperature: float = 0.0,
         seed: int = 0, logprobs: bool = False, timeout_s: float = 300.0) -> ChatReply:
    """One OpenAI chat completion with an image; greedy by default. `url` is the API's base URL as
    `thinkpipe serve` prints it (`http://HOST:PORT/v1`); the server's root is taken as well. vLLM's
    `return_token_ids` extension adds the prompt's and the answer's token ids (other servers leave
    them None)."""
    body = {"model": model, "messages": chat_messages(image, question), "max_tokens": max_tokens,
            "temperature": temperature, "seed": seed, "return_token_ids": True, "logprobs": logprobs}
    reply = chat_completion(url, body, auth_headers(), timeout_s)
    choice = reply["choices"][0]
    token_logprobs = [t["logprob"] for t in (choice.get("logprobs") or {}).get("content") or []] or None
    return ChatReply(choice["message"]["content"] or "", choice.get("token_ids"), reply.get("prompt_token_ids"),
                     choice.get("finish_reason", ""), reply.get("usage", {}), token_logprobs)
