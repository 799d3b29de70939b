"""A loopback stand-in for an OpenAI-compatible judge endpoint (`POST /v1/chat/completions`).

It reads the question, reference and candidate blocks out of thinkpipe's judge prompt (unescaping
them) and says `yes` when every word of the reference is in the candidate (case and punctuation
aside), else `no`: a stand-in judge with a known rule, so tests know each verdict in advance. It is
also deliberately gullible, like a real model open to prompt injection: an order to reply yes in the
prompt's instruction part (all outside the data blocks) gets `yes`, whatever the answer. It checks
the bearer token when given one, can be slowed down or made to answer nonsense, and records every
request.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler

from tests.loopback import LoopbackServer

# a block's content is escaped, so it holds no `<`: the first `</tag>` after it is its own end
_BLOCK = re.compile(r"<(question|reference_answer|candidate_answer)>\n([^<]*)\n</\1>")
_OBEY = re.compile(r"\b(?:reply|answer)\s+yes\b", re.IGNORECASE)  # the order the stand-in falls for


def read_blocks(prompt: str) -> dict[str, str]:
    """The data blocks' contents, unescaped: what the judge grades."""
    return {tag: html.unescape(text) for tag, text in _BLOCK.findall(prompt)}


def stand_in_verdict(prompt: str) -> str:
    if _OBEY.search(_BLOCK.sub("", prompt)):  # gullible, but only about instructions: data is not obeyed
        return "yes"
    fields = read_blocks(prompt)
    words = lambda text: set(re.findall(r"[a-z0-9]+", text.lower()))  # noqa: E731
    return "yes" if words(fields["reference_answer"]) <= words(fields["candidate_answer"]) else "no"


class JudgeServer(LoopbackServer):
    def __init__(self, api_key: str = "", delay_s: float = 0.0, reply: str | None = None):
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                    return self._send(401, {"error": {"message": "invalid API key"}})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                with lock:
                    server.requests.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(delay_s)
                    prompt = "\n".join(m["content"] for m in body["messages"])  # system and user alike
                    text = reply if reply is not None else stand_in_verdict(prompt)
                finally:  # answered: no longer in flight (counted before the reply, which frees the client's slot)
                    with lock:
                        server.in_flight -= 1
                self._send(200, {"id": "judge", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}]})

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                    pass

            def log_message(self, *args):
                pass

        super().__init__(Handler)
        self.httpd.block_on_close = False  # a slowed-down reply the client gave up on need not be waited for

    @property
    def api_url(self) -> str:
        return self.url + "/v1"
