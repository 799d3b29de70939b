"""A loopback HTTP proxy in front of a test server (the S3 stand-in, a real MLflow server) that
injects the faults of a real deployment on chosen requests: a 503 answer (throttling, a node
restarting: S3's SlowDown), an answer cut off half way through its body, or a connection closed
with no answer at all (the server gone). Point the client (`AWS_ENDPOINT_URL`, the tracking URI)
at `proxy.url`."""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from tests.loopback import LoopbackServer

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b'<Message>Please reduce your request rate.</Message></Error>')


@dataclass
class Fault:
    method: str    # "*": any
    key_part: str  # a request whose path contains this ("": any)
    kind: str      # "503", "truncate" or "drop"
    times: int     # how many matching requests get it
    injected: int = 0


class FaultProxy(LoopbackServer):
    def __init__(self, upstream: str):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._take(self.command, urllib.parse.unquote(self.path))
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST", "PATCH") else None,
                             headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                conn.close()
                self.send_response(reply.status, reply.reason)
                hop = ("connection", "keep-alive", "transfer-encoding") + (() if self.command == "HEAD" else ("content-length",))
                for name, value in reply.getheaders():
                    if name.lower() not in hop:
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))  # the whole body's length, always
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if fault == "truncate" else data)
                self.close_connection = True

            do_GET = do_PUT = do_POST = do_PATCH = do_HEAD = do_DELETE = _forward

        super().__init__(Handler)

    def inject(self, method: str, key_part: str, kind: str, times: int) -> Fault:
        fault = Fault(method, key_part, kind, times)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()

    def _take(self, method: str, path: str) -> str | None:
        with self.lock:
            for fault in self.faults:
                if fault.method in ("*", method) and fault.key_part in path and fault.injected < fault.times:
                    fault.injected += 1
                    return fault.kind
        return None
