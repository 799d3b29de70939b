"""A real `mlflow server` on 127.0.0.1 with a SQLite store and a local artifact folder, started and
stopped by a test; `kill()` and `start()` again (same port, same store) make it fail mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from model_src.train.distributed import free_port


class MlflowServer:
    def __init__(self, state: Path):
        self.state = Path(state)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> "MlflowServer":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.state / 'server.db'}",
             "--artifacts-destination", str(self.state / "server-artifacts"), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"mlflow server on port {self.port} did not start")
                time.sleep(0.25)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """The server (its whole process group: the web workers too) dies at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill(signal.SIGTERM)
