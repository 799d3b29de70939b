"""The rollout server: vLLM's offline engine behind a small JSON API, for RL rollouts.

vLLM cannot share training's venv (it pins another torch and transformers), so on a machine with
both the rollouts come from a server of its own, run by the serving venv's python:

    .venv-serve/bin/python -m model_src.serving.rollout_server --model FOLDER --port 8100

The trainer's `VLLMServerEngine` (model_src/rl/rollout.py) starts it on 127.0.0.1 (or connects to
one given by URL), sends prompts with their images and per-request sampling parameters, and pushes
the policy's weights after every update:

    GET  /health        (open; every POST needs `Authorization: Bearer $VLLM_API_KEY` when it is set)
    POST /generate      {"requests": [{"prompt": str | "prompt_token_ids": [int], "images": [PNG, base64],
                                       "params": {n, max_tokens, temperature, top_p, top_k, seed, ...}}]}
                        -> {"outputs": [{"prompt_token_ids": [int], "completions": [[int], ...]}]}
    POST /load_weights  {"path": FILE.safetensors} -> {"seconds": float}

Weights travel through a safetensors file both sides can read (a temporary folder here, a shared
volume on a cluster). On GPUs the push would go over NCCL as TRL's `vllm-serve` does; that path is
not built, as no GPU machine here can hold vLLM to verify it. One request at a time (standard
library HTTP): the engine batches all the prompts of a request.

vLLM is imported inside the functions that need it: the training venv imports this module for
`encode_image` only.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


def encode_image(image) -> str:
    """A PIL image as base64 PNG (lossless: the server decodes the very pixels the trainer has)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(data: str):
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def build_llm(folder: str | Path, *, seed: int = 0, **llm_kwargs):
    """vLLM's offline engine on an HF folder: in-process engine core (weights can be reloaded in
    place), the weights' own dtype, and the config facts the folder leaves implicit."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM

    from model_src.serving.vllm_compat import hf_overrides, model_dtype

    folder = Path(folder)
    overrides = hf_overrides(folder)  # q/k/v biases vLLM's Glm4 would otherwise drop (see vllm_compat)
    # No chunked prefill: a prompt split over engine steps has its first sampled token discarded,
    # and for a seeded request vLLM then rewinds the request's generator, which only CUDA
    # generators support ("CPU Generator does not use offset" on the CPU build, seen here with
    # force answering's long continuation prompts). Whole prompts per step sample the same tokens.
    llm_kwargs.setdefault("enable_chunked_prefill", False)
    return LLM(model=str(folder), dtype=model_dtype(folder), seed=seed, generation_config="vllm",
               distributed_executor_backend="uni", **({"hf_overrides": overrides} if overrides else {}), **llm_kwargs)


def run_requests(llm, requests: list[dict]) -> list[dict]:
    """Generate for `requests` (prompt or prompt_token_ids, PIL `images`, a `params` dict) in one
    batch; per request the prompt's token ids and each completion's token ids, in sample order."""
    from vllm import SamplingParams

    prompts, params = [], []
    for request in requests:
        prompt = ({"prompt_token_ids": request["prompt_token_ids"]} if "prompt_token_ids" in request
                  else {"prompt": request["prompt"]})
        if request.get("images"):
            prompt["multi_modal_data"] = {"image": list(request["images"])}
        prompts.append(prompt)
        params.append(SamplingParams(**request["params"], detokenize=False, skip_special_tokens=False))
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return [{"prompt_token_ids": list(out.prompt_token_ids),
             "completions": [list(c.token_ids) for c in sorted(out.outputs, key=lambda c: c.index)]}
            for out in outputs]


def reload_weights(llm, weights) -> None:
    """Load (name, tensor) pairs into vLLM's model in place (its own checkpoint-name mapping), then
    drop what was computed with the old weights: KV blocks (prefix cache) and vision embeddings (the
    scheduler's encoder-cache bookkeeping too), and the processed-image cache on both sides."""
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights), "is_checkpoint_format": True})
    if not llm.reset_prefix_cache():
        raise RuntimeError("vLLM did not reset its prefix cache after the weight reload")
    llm.llm_engine.reset_encoder_cache()
    llm.reset_mm_cache()


def send_json(handler: BaseHTTPRequestHandler, status: int, body) -> None:
    """Reply to an http.server request with `body` as JSON."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def make_handler(llm):
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict) -> None:
            send_json(self, status, body)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                self._reply(200, {"status": "ok"})
            else:
                self._reply(404, {"error": f"no GET {self.path}"})

        def do_POST(self):  # noqa: N802
            from model_src.serving.base import authorized

            if not authorized(self.headers.get("Authorization")):  # VLLM_API_KEY set: a bearer token is required
                return self._reply(401, {"error": "missing or wrong bearer token"})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/generate":
                    requests = [{**r, "images": [decode_image(i) for i in r.get("images", [])]}
                                for r in body["requests"]]
                    self._reply(200, {"outputs": run_requests(llm, requests)})
                elif self.path == "/load_weights":
                    from safetensors.torch import load_file

                    started = time.monotonic()
                    reload_weights(llm, load_file(body["path"]).items())
                    self._reply(200, {"seconds": time.monotonic() - started})
                else:
                    self._reply(404, {"error": f"no POST {self.path}"})
            except Exception as exc:  # the trainer gets the reason, the server keeps serving
                self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})

        def log_message(self, fmt, *args):  # one line per request on stderr (the server's log)
            sys.stderr.write(f"rollout_server: {self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_src.serving.rollout_server",
                                     description="vLLM rollouts over HTTP for the RLCS stage (run in .venv-serve)")
    parser.add_argument("--model", required=True, help="HF folder: the policy's weights, processor and tokenizer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    args = parser.parse_args(argv)
    llm = build_llm(args.model, seed=args.seed, gpu_memory_utilization=args.gpu_memory_utilization)
    server = HTTPServer((args.host, args.port), make_handler(llm))
    print(f"rollout_server: serving {args.model} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
