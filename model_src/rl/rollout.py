"""Rollout engines for RL: who generates the rollouts the policy-gradient step scores.

Both engines return the same `Rollouts` (model_src/model/generate.py): the prompt part is the
processor batch (left-padded, with pixel values and grids, as the policy forward reads it), the
response part is the generated token ids padded with the pad token, `response_mask` / `loss_mask`
/ `texts` / `forced` computed the same way. So `response_logprobs` and the clipped loss do not
know which engine produced a batch.

- `TransformersEngine` (default where vLLM is absent): today's `generate` on the policy module
  itself; nothing to sync.
- `VLLMEngine`: vLLM's offline `LLM` on a copy of the policy's weights. Groups are `n` samples of
  one request per prompt; every request is seeded from torch's global RNG (so the checkpointed RNG
  state reproduces the rollouts of a resumed run); media tokens are excluded from sampling as in
  `generate` (`allowed_token_ids` = every id but them: a hard mask, like `suppress_tokens`);
  force answering is a second vLLM call that continues the out-of-budget rows after
  `</think><answer>`. Weights are synced in place after each policy update (`sync_weights`):
  the policy's state dict goes to vLLM's worker `reload_weights` (the model's own `load_weights`
  name mapping), then the prefix, encoder and multimodal caches are dropped (their entries were
  computed with the old weights, or refer to entries the reload dropped).
  The engine core runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, the `uni` executor),
  so the tensors are handed over without serialisation; only the one-time start writes the policy
  to a folder (`save_pretrained`) for vLLM to build its model from.

- `VLLMServerEngine`: the same requests sent over HTTP to a rollout server
  (`model_src/serving/rollout_server.py`) that runs vLLM in its own venv, since vLLM's pins cannot
  share training's; the engine starts one from `.venv-serve` on 127.0.0.1 or uses
  `rlcs.rollout_server_url`. After each update the policy's weights go to it as a safetensors file.

`make_engine(cfg, model, processor)` picks one from `rlcs.rollout_engine`: "auto" (vLLM when it
imports and CUDA is available, else transformers), "transformers", "vllm" (fails clearly when
vLLM is missing) or "vllm-server".
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from model_src.model.build import stop_token_ids
from model_src.model.generate import (Rollouts, _decode, derived_seed, generate, response_mask_from,
                                      rows_to_force, splice_forced, suppressed_token_ids)
from model_src.model.inputs import Example, collate

from model_src.config.recipe import ROLLOUT_ENGINES as ENGINES  # named once, in the config
from model_src.names import ROLLOUT_SERVER_ENV, ROLLOUT_WEIGHTS_ENV


class RolloutEngine:
    """Generates `n` rollouts per example, rows prompt-major: example 0's n rollouts, then example 1's.
    With `seeds` (one per example) an example's rollouts depend on its seed alone, not on the other
    examples of the call: RL seeds each prompt group, so splitting groups over processes changes nothing."""

    name = "base"

    def generate(self, examples: list[Example], *, n: int = 1, max_new_tokens: int, do_sample: bool,
                 temperature: float = 1.0, top_p: float = 1.0, force_answer_tokens: int = 0,
                 seeds: list[int] | None = None) -> Rollouts:
        raise NotImplementedError

    def sync_weights(self, model) -> None:
        """Make the engine generate with `model`'s current weights (after a policy update)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "RolloutEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TransformersEngine(RolloutEngine):
    """transformers `generate` on the policy module itself (what the loop always did)."""

    name = "transformers"

    def __init__(self, model, processor):
        self.model, self.processor = model, processor

    def generate(self, examples, *, n=1, max_new_tokens, do_sample, temperature=1.0, top_p=1.0,
                 force_answer_tokens=0, seeds=None):
        rows = [ex for ex in examples for _ in range(n)]
        row_seeds = None if seeds is None else [derived_seed(s, k) for s in seeds for k in range(n)]
        return generate(self.model, self.processor, rows, max_new_tokens=max_new_tokens, do_sample=do_sample,
                        temperature=temperature, top_p=top_p, force_answer_tokens=force_answer_tokens,
                        seeds=row_seeds)

    def sync_weights(self, model) -> None:
        self.model = model  # the same module: its weights are the policy's


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def make_engine(cfg, model, processor, seed: int = 0) -> RolloutEngine:
    """The engine `cfg.rollout_engine` asks for (an `RLConfig` or `EvalConfig`)."""
    choice = getattr(cfg, "rollout_engine", "auto")
    if choice not in ENGINES:
        raise ValueError(f"rollout_engine must be one of {ENGINES}, got {choice!r}")
    if choice == "transformers" or (choice == "auto" and not (torch.cuda.is_available() and vllm_available())):
        return TransformersEngine(model, processor)
    if choice == "vllm-server":
        # a URL in the config, else the one a cluster launcher gave the job (a rollout server pod
        # beside it, weights over the shared volume), else a server of this process's own
        url = getattr(cfg, "rollout_server_url", "") or os.environ.get(ROLLOUT_SERVER_ENV, "")
        return VLLMServerEngine(model, processor, seed=seed, url=url,
                                weights_dir=os.environ.get(ROLLOUT_WEIGHTS_ENV) or None)
    if not vllm_available():
        raise RuntimeError("rlcs.rollout_engine='vllm' but `import vllm` fails in this environment: install vLLM "
                           "(a CUDA build on GPU machines), use rlcs.rollout_engine=vllm-server (vLLM in its own "
                           "venv, `make serve-venv`), or transformers or auto")
    return VLLMEngine(model, processor, seed=seed)


class _VLLMRollouts(RolloutEngine):
    """What both vLLM engines share: requests from examples, the prompt check, force answering and
    `Rollouts` from token ids. Subclasses run the requests (`_run`) and push weights (`sync_weights`)."""

    def __init__(self, model, processor):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.vocab_size = model.config.get_text_config().vocab_size
        suppress = set(suppressed_token_ids(model, self.tokenizer))
        self.allowed_token_ids = [t for t in range(self.vocab_size) if t not in suppress]
        self.stops = stop_token_ids(self.tokenizer)
        self.image_token_id = model.config.image_token_id
        self.last_sync_s = 0.0

    def _run(self, requests: list[dict]) -> list[dict]:
        """Generate for `requests` (`model_src.serving.rollout_server.run_requests`'s format)."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------- sampling
    def _params(self, *, n: int, max_tokens: int, do_sample: bool, temperature: float, top_p: float,
                seed: int | None = None) -> dict:
        # the caller's per-request seed, else one from torch's global generator: seeded runs and
        # resumed runs (whose checkpoint restores that generator) draw the same rollouts
        seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed % (2**31 - 1)
        return dict(n=n, max_tokens=max_tokens, temperature=temperature if do_sample else 0.0,
                    top_p=top_p if do_sample else 1.0, top_k=0, seed=seed, stop_token_ids=self.stops,
                    allowed_token_ids=self.allowed_token_ids)

    def _padded(self, token_lists: list[list[int]]) -> torch.Tensor:
        width = max(1, max(len(t) for t in token_lists))
        out = torch.full((len(token_lists), width), self.tokenizer.pad_token_id, dtype=torch.long)
        for i, tokens in enumerate(token_lists):
            out[i, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return out

    def generate(self, examples, *, n=1, max_new_tokens, do_sample, temperature=1.0, top_p=1.0,
                 force_answer_tokens=0, seeds=None):
        if n > 1 and not do_sample:
            raise ValueError("greedy decoding with n > 1 gives n copies of one rollout: use do_sample=True")
        outputs = self._run([{"prompt": ex.prompt, "images": list(ex.images),
                              "params": self._params(n=n, max_tokens=max_new_tokens, do_sample=do_sample,
                                                     temperature=temperature, top_p=top_p,
                                                     seed=None if seeds is None else seeds[i])}
                             for i, ex in enumerate(examples)])
        rows = [ex for ex in examples for _ in range(n)]
        batch = collate(self.processor, rows, with_targets=False, padding_side="left")
        prompt_ids = [out["prompt_token_ids"] for out in outputs for _ in range(n)]
        for i, ids in enumerate(prompt_ids):  # the policy must score the prompt vLLM generated from
            ours = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
            if ours != ids:
                raise RuntimeError(f"vLLM tokenised prompt {i} ({rows[i].row_id}) differently from the processor "
                                   f"({len(ids)} vs {len(ours)} tokens): rollouts would be scored on another prompt")
        responses = self._padded([c for out in outputs for c in out["completions"]])
        mask = response_mask_from(responses, self.stops)
        rollouts = Rollouts(batch=dict(batch), sequences=torch.cat([batch["input_ids"], responses], dim=1),
                            response_mask=mask, texts=_decode(self.tokenizer, responses, mask),
                            images_per_sample=[len(ex.images) for ex in rows])
        if force_answer_tokens <= 0:
            return rollouts
        out_of_budget = rows_to_force(self.tokenizer, responses, mask, max_new_tokens)  # as `generate` does
        if not out_of_budget:
            return rollouts
        inserted = self.tokenizer.convert_tokens_to_ids(["</think>", "<answer>"])
        # a token prompt with images must hold one `<|image|>` per image, which vLLM expands again
        # (an already expanded prompt would be expanded twice): collapse, then check what it built
        heads = [prompt_ids[r] + responses[r].tolist() + inserted for r in out_of_budget]
        continued = self._run([{"prompt_token_ids": self._collapse_images(head), "images": list(rows[r].images),
                                "params": self._params(n=1, max_tokens=force_answer_tokens, do_sample=do_sample,
                                                       temperature=temperature, top_p=top_p,
                                                       seed=None if seeds is None else
                                                       derived_seed(seeds[r // n], r % n, "forced"))}
                               for head, r in zip(heads, out_of_budget)])
        for head, r, out in zip(heads, out_of_budget, continued):
            if out["prompt_token_ids"] != head:
                raise RuntimeError(f"vLLM built the force-answer prompt of row {r} differently "
                                   f"({len(out['prompt_token_ids'])} vs {len(head)} tokens)")
        tail = self._padded([out["completions"][0] for out in continued])
        return splice_forced(self.tokenizer, rollouts, out_of_budget, torch.tensor(inserted), tail, self.stops)

    def _collapse_images(self, ids: list[int]) -> list[int]:
        """Each image's run of `<|image|>` tokens back to the one placeholder the chat template writes."""
        out: list[int] = []
        for token in ids:
            if not (token == self.image_token_id and out and out[-1] == self.image_token_id):
                out.append(token)
        return out


class VLLMEngine(_VLLMRollouts):
    """vLLM's offline `LLM` in this process, holding a copy of the policy's weights (where vLLM is
    installed beside training, e.g. a CUDA image built with both).

    folder: an HF folder with the same weights, processor and tokenizer (e.g. an export); without
    it the policy and processor are saved to a temporary folder that lives as long as the engine.
    """

    name = "vllm"

    def __init__(self, model, processor, *, seed: int = 0, folder: str | Path | None = None,
                 enforce_eager: bool = False, gpu_memory_utilization: float = 0.3,
                 max_model_len: int | None = None, **llm_kwargs):
        from model_src.serving.rollout_server import build_llm

        super().__init__(model, processor)
        self._tmp = None
        started = time.monotonic()
        if folder is None:
            self._tmp = tempfile.mkdtemp(prefix="thinkpipe-vllm-policy-")
            model.save_pretrained(self._tmp)
            processor.save_pretrained(self._tmp)
            folder = self._tmp
        self.folder = Path(folder)
        # in-process engine core and worker: `sync_weights` hands tensors over directly
        self.llm = build_llm(self.folder, seed=seed, enforce_eager=enforce_eager,
                             gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, **llm_kwargs)
        self.start_s = time.monotonic() - started

    def _run(self, requests: list[dict]) -> list[dict]:
        from model_src.serving.rollout_server import run_requests

        return run_requests(self.llm, requests)

    def sync_weights(self, model) -> None:
        """Load `model`'s current state dict into vLLM's model in place."""
        from model_src.serving.rollout_server import reload_weights

        started = time.monotonic()
        reload_weights(self.llm, [(name, tensor.detach()) for name, tensor in model.state_dict().items()])
        self.last_sync_s = time.monotonic() - started

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:
                pass
            del llm
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class VLLMServerEngine(_VLLMRollouts):
    """Rollouts from a vLLM rollout server (`model_src/serving/rollout_server.py`) over HTTP: one
    this engine starts from the serving venv on 127.0.0.1, or one already running at `url`. After
    each update the policy's weights are written to a safetensors file the server reads
    (`weights_dir`: a temporary folder here; on a cluster a volume both pods mount). A server at
    `url` is shared by every process of a data-parallel job: their weights are the same after an
    update, so rank 0 alone pushes them and the others wait for it (one write, one reload)."""

    name = "vllm-server"

    def __init__(self, model, processor, *, seed: int = 0, url: str = "", venv: str | Path = "",
                 weights_dir: str | Path | None = None, timeout_s: float = 600.0):
        from model_src.serving import DEFAULT_VENV
        from model_src.serving.server import VllmServer, rollout_server_command, server_env
        from model_src.train.distributed import free_port

        super().__init__(model, processor)
        self._tmp = tempfile.mkdtemp(prefix="thinkpipe-rollout-server-")
        self.weights_dir = Path(weights_dir or self._tmp)
        self.weights_dir.mkdir(parents=True, exist_ok=True)  # a shared volume's folder may not exist yet
        self.server = None
        started = time.monotonic()
        if url:
            self.url = url.rstrip("/")
        else:
            folder = Path(self._tmp) / "policy"
            model.save_pretrained(folder)
            processor.save_pretrained(folder)
            port = free_port()
            self.server = VllmServer(rollout_server_command(venv or DEFAULT_VENV, folder, "127.0.0.1", port, seed),
                                     "127.0.0.1", port, log_path=Path(self._tmp) / "rollout_server.log",
                                     env=server_env())
            self.server.start()
            try:
                self.server.wait_healthy(timeout_s)
            except BaseException:
                self.close()
                raise
            self.url = self.server.root_url
        self.start_s = time.monotonic() - started

    def _post(self, path: str, body: dict) -> dict:
        import json
        import urllib.error
        import urllib.request

        from model_src.serving.base import auth_headers

        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json", **auth_headers()})
        try:
            with urllib.request.urlopen(request, timeout=3600) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"rollout server {self.url}{path}: {json.loads(exc.read()).get('error', exc)}") from exc

    def _run(self, requests: list[dict]) -> list[dict]:
        from model_src.serving.rollout_server import encode_image

        return self._post("/generate", {"requests": [{**r, "images": [encode_image(i) for i in r["images"]]}
                                                     for r in requests]})["outputs"]

    def sync_weights(self, model) -> None:
        """Write the policy's weights to `weights_dir` and have the server load them in place."""
        from safetensors.torch import save_file

        from model_src.train.distributed import barrier, process_group

        rank, world = process_group()
        if self.server is None and world > 1:  # a shared server: rank 0 pushes, the others wait for it
            if rank == 0:
                self._push(model, save_file)
            barrier()
            return
        self._push(model, save_file)

    def _push(self, model, save_file) -> None:
        started = time.monotonic()
        path = self.weights_dir / "policy.safetensors"
        tmp = path.with_suffix(".tmp")
        # contiguous host copies: what safetensors writes; tied tensors are saved once per name
        save_file({name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}, tmp)
        tmp.rename(path)  # the server never reads a half-written file
        self._post("/load_weights", {"path": str(path)})
        self.last_sync_s = time.monotonic() - started

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
