"""A loopback stand-in for an OpenAI-compatible judge endpoint (`POST /v1/chat/completions`).

It reads the candidate and reference answers out of thinkpipe's judge prompt and says `yes` when
every word of the reference is in the candidate (case and punctuation aside), else `no`: a
stand-in judge with a known rule, so tests know each verdict in advance. It checks the bearer
token when given one, can be slowed down or made to answer nonsense, and records every request.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler

from tests.loopback import LoopbackServer

_FIELD = re.compile(r"^(Reference answer|Candidate answer): (.*)$", re.MULTILINE)


def stand_in_verdict(prompt: str) -> str:
    fields = dict(_FIELD.findall(prompt))
    words = lambda text: set(re.findall(r"[a-z0-9]+", text.lower()))  # noqa: E731
    return "yes" if words(fields["Reference answer"]) <= words(fields["Candidate answer"]) else "no"


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
                    text = reply if reply is not None else stand_in_verdict(body["messages"][0]["content"])
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
