"""A loopback stand-in for a chat webhook (Slack-style): records every JSON body POSTed to it."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

from tests.loopback import LoopbackServer


class WebhookServer(LoopbackServer):
    def __init__(self, status: int = 200):
        self.posts: list[tuple[str, dict]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        super().__init__(Handler)
