"""Rollout throughput: vLLM's rollout server (its own venv, over loopback HTTP) vs transformers `generate`.

Both engines generate the same RL step's rollouts: the small profile's model (random weights: the
work per token is the model's, not its training), `prompts_per_iteration` image prompts x
`group_size` samples, seeded per group, at most `max_new_tokens` each, force answering on, as the
GRPO loop asks for them. One warm-up call each, then the mean of `--repeats` calls; generated
tokens are counted on both sides so that equal work is shown. The server's start and the weight
push are timed apart (they are not per-step costs of the rollouts themselves; the push is, once
per update, and is printed beside them).

    .venv/bin/python bench/bench_rollouts.py [--repeats 3]     (needs .venv-serve: make serve-venv)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per engine (after one warm-up)")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="default: the profile's rlcs.max_new_tokens")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. model.text_hidden_size=512 (a larger model)")
    args = parser.parse_args()

    import torch

    from model_src.config import load_config
    from model_src.data.generate import GeneratorConfig, domain_rows
    from model_src.model.build import build_model, build_processor, train_tokenizer
    from model_src.model.generate import derived_seed
    from model_src.model.inputs import prompt_example
    from model_src.rl.rollout import TransformersEngine, VLLMServerEngine

    cfg = load_config(args.profile, args.set)
    rl = cfg.rlcs
    max_new = args.max_new_tokens or rl.max_new_tokens
    gen = GeneratorConfig(rows={"digits": 40, "chart": 40})
    rows = [r for pair in zip(domain_rows(gen, "digits", "train"), domain_rows(gen, "chart", "train")) for r in pair]
    processor = build_processor(train_tokenizer([t for r in rows for t in (r["question"], r["reasoning"])], 400),
                                cfg.model)
    model = build_model(cfg.model, processor.tokenizer, seed=0)
    prompts = [prompt_example(processor, r) for r in rows[:rl.prompts_per_iteration]]  # digits and charts
    print(f"{len(prompts)} prompts x {rl.group_size} samples, <= {max_new} new tokens, model "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters ({args.profile} {' '.join(args.set)}), "
          f"{torch.get_num_threads()} threads", flush=True)

    def timed(engine, label: str) -> tuple[float, int]:
        seconds, tokens = [], []
        for call in range(args.repeats + 1):
            seeds = [derived_seed(call, ex.row_id) for ex in prompts]
            started = time.monotonic()
            out = engine.generate(prompts, n=rl.group_size, max_new_tokens=max_new, do_sample=True,
                                  temperature=rl.temperature, top_p=rl.top_p,
                                  force_answer_tokens=rl.force_answer_tokens, seeds=seeds)
            elapsed = time.monotonic() - started
            if call:  # the first call warms up
                seconds.append(elapsed)
                tokens.append(int(out.response_mask.sum()))
        mean_s, mean_tokens = statistics.fmean(seconds), statistics.fmean(tokens)
        print(f"  {label:<22} {mean_s:7.2f} s per step, {mean_tokens:7.0f} tokens, "
              f"{mean_tokens / mean_s:8.0f} tokens/s  (calls: {', '.join(f'{s:.2f}' for s in seconds)} s)", flush=True)
        return mean_s, mean_tokens

    local_s, local_tokens = timed(TransformersEngine(model, processor), "transformers generate")
    started = time.monotonic()
    with VLLMServerEngine(model, processor, venv=ROOT / ".venv-serve") as server:
        print(f"  (rollout server started in {time.monotonic() - started:.0f} s)", flush=True)
        server_s, server_tokens = timed(server, "vLLM rollout server")
        server.sync_weights(model)
        print(f"  weight push (safetensors file + reload): {server.last_sync_s:.2f} s per update", flush=True)
    ratio = (server_tokens / server_s) / (local_tokens / local_s)
    print(f"vLLM server / transformers generate: {ratio:.2f}x tokens/s (goal > 1x on this CPU)")


if __name__ == "__main__":
    main()
