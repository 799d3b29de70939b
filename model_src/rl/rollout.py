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

`make_engine(cfg, model, processor)` picks one from `rlcs.rollout_engine`: "auto" (vLLM when it
imports and CUDA is available, else transformers), "transformers", or "vllm" (fails clearly when
vLLM is missing).
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

ENGINES = ("auto", "transformers", "vllm")


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
    """The engine `cfg.rollout_engine` asks for (an `RLConfig`)."""
    choice = getattr(cfg, "rollout_engine", "auto")
    if choice not in ENGINES:
        raise ValueError(f"rlcs.rollout_engine must be one of {ENGINES}, got {choice!r}")
    if choice == "transformers" or (choice == "auto" and not (torch.cuda.is_available() and vllm_available())):
        return TransformersEngine(model, processor)
    if not vllm_available():
        raise RuntimeError("rlcs.rollout_engine='vllm' but `import vllm` fails in this environment: install vLLM "
                           "(a CUDA build on GPU machines) or set rlcs.rollout_engine=transformers or auto")
    return VLLMEngine(model, processor, seed=seed)


class VLLMEngine(RolloutEngine):
    """vLLM's offline `LLM` holding a copy of the policy's weights.

    folder: an HF folder with the same weights, processor and tokenizer (e.g. an export); without
    it the policy and processor are saved to a temporary folder that lives as long as the engine.
    """

    name = "vllm"

    def __init__(self, model, processor, *, seed: int = 0, folder: str | Path | None = None,
                 enforce_eager: bool = False, gpu_memory_utilization: float = 0.3,
                 max_model_len: int | None = None, **llm_kwargs):
        # in-process engine core and worker: `sync_weights` hands tensors over directly, and
        # `collective_rpc` can run without pickling the weights. Set before vLLM builds its engine.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        from model_src.serving import hf_overrides, model_dtype

        self.processor = processor
        self.tokenizer = processor.tokenizer
        self._tmp = None
        started = time.monotonic()
        if folder is None:
            self._tmp = tempfile.mkdtemp(prefix="thinkpipe-vllm-policy-")
            model.save_pretrained(self._tmp)
            processor.save_pretrained(self._tmp)
            folder = self._tmp
        folder = Path(folder)
        self.folder = folder
        self.vocab_size = model.config.get_text_config().vocab_size
        suppress = set(suppressed_token_ids(model, self.tokenizer))
        self.allowed_token_ids = [t for t in range(self.vocab_size) if t not in suppress]
        self.stops = stop_token_ids(self.tokenizer)
        self.image_token_id = model.config.image_token_id
        overrides = hf_overrides(folder)  # q/k/v biases vLLM's Glm4 would otherwise drop (see serving)
        self.llm = LLM(model=str(folder), dtype=model_dtype(folder), seed=seed, enforce_eager=enforce_eager,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                       generation_config="vllm", distributed_executor_backend="uni",
                       **({"hf_overrides": overrides} if overrides else {}), **llm_kwargs)
        self.start_s = time.monotonic() - started
        self.last_sync_s = 0.0

    # ----------------------------------------------------------------------------------- sampling
    def _params(self, *, n: int, max_tokens: int, do_sample: bool, temperature: float, top_p: float,
                seed: int | None = None):
        from vllm import SamplingParams

        # the caller's per-request seed, else one from torch's global generator: seeded runs and
        # resumed runs (whose checkpoint restores that generator) draw the same rollouts
        seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed % (2**31 - 1)
        return SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature if do_sample else 0.0,
                              top_p=top_p if do_sample else 1.0, top_k=0, seed=seed,
                              stop_token_ids=self.stops, allowed_token_ids=self.allowed_token_ids,
                              detokenize=False, skip_special_tokens=False)

    @staticmethod
    def _mm(example: Example) -> dict:
        return {"multi_modal_data": {"image": list(example.images)}} if example.images else {}

    def _run(self, prompts: list[dict], params: list) -> list:
        return self.llm.generate(prompts, params, use_tqdm=False)

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
        prompts = [{"prompt": ex.prompt, **self._mm(ex)} for ex in examples]
        params = [self._params(n=n, max_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                               top_p=top_p, seed=None if seeds is None else seeds[i]) for i in range(len(examples))]
        outputs = self._run(prompts, params)
        rows = [ex for ex in examples for _ in range(n)]
        batch = collate(self.processor, rows, with_targets=False, padding_side="left")
        prompt_ids = [list(out.prompt_token_ids) for out in outputs for _ in range(n)]
        for i, ids in enumerate(prompt_ids):  # the policy must score the prompt vLLM generated from
            ours = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
            if ours != ids:
                raise RuntimeError(f"vLLM tokenised prompt {i} ({rows[i].row_id}) differently from the processor "
                                   f"({len(ids)} vs {len(ours)} tokens): rollouts would be scored on another prompt")
        responses = self._padded([list(c.token_ids) for out in outputs for c in sorted(out.outputs, key=lambda c: c.index)])
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
        requests = [{"prompt_token_ids": self._collapse_images(head), **self._mm(rows[r])}
                    for head, r in zip(heads, out_of_budget)]
        params = [self._params(n=1, max_tokens=force_answer_tokens, do_sample=do_sample, temperature=temperature,
                               top_p=top_p, seed=None if seeds is None else derived_seed(seeds[r // n], r % n, "forced"))
                  for r in out_of_budget]
        continued = self._run(requests, params)
        for head, r, out in zip(heads, out_of_budget, continued):
            if list(out.prompt_token_ids) != head:
                raise RuntimeError(f"vLLM built the force-answer prompt of row {r} differently "
                                   f"({len(out.prompt_token_ids)} vs {len(head)} tokens)")
        tail = self._padded([list(out.outputs[0].token_ids) for out in continued])
        return splice_forced(self.tokenizer, rollouts, out_of_budget, torch.tensor(inserted), tail, self.stops)

    def _collapse_images(self, ids: list[int]) -> list[int]:
        """Each image's run of `<|image|>` tokens back to the one placeholder the chat template writes."""
        out: list[int] = []
        for token in ids:
            if not (token == self.image_token_id and out and out[-1] == self.image_token_id):
                out.append(token)
        return out

    # ---------------------------------------------------------------------------------- weights
    def sync_weights(self, model) -> None:
        """Load `model`'s current state dict into vLLM's model in place (its own checkpoint-name
        mapping), then drop the prefix cache, whose KV came from the old weights."""
        started = time.monotonic()
        weights = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        # what was computed with the old weights: KV blocks (prefix cache) and vision embeddings
        # (the scheduler's encoder-cache bookkeeping too, or it would point at cleared entries);
        # the processed-image cache is reset on both sides, since the worker dropped its copy
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM did not reset its prefix cache after the weight sync")
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()
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
