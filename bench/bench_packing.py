"""Useful (non-pad) tokens/s: packed rows against two padded baselines, measured fairly, side by side.

Fair: every arm trains on the same samples, encoded once before any timer starts (the project's
`packing.encode`, the same for all arms), so the timers hold only what differs: collating the batch
from encoded tensors, forward, backward and the optimizer step. Every arm sees every sample once a
pass (`--passes`), from the same model initialisation, in one process, the arms' steps interleaved
(one step of each in turn) so that a shared machine's drifting speed falls on all of them alike.

Arms (`--batch-size` B samples a step for the padded ones):
- random: B samples in sampling order, padded to the longest (the usual default);
- grouped: length-grouped batches, as `group_by_length` does (mega-batches of 50 B samples in
  sampling order, sorted by length, cut into batches of B, batches shuffled): the strong baseline;
- packed: `--rows` rows of `--pack-length` tokens, filled first fit with whole samples
  (`packing.plan_steps`), each sample attending only to itself (`packed_attention`, as the trainer).

Lengths: real long chain-of-thought responses are long-tailed, so each curated SFT row's reasoning
is repeated to a target drawn from a log-normal (median `--median` tokens, sigma `--sigma`), capped
so that a sample fits a packed row. The realised token lengths are printed.

Goals (issue 20): packed >= 2.0x the useful tokens/s of random padding, > 1.0x of length-grouped.

    .venv/bin/python bench/bench_packing.py [--samples 640] [--pack-length 2048] [--rows 1] [--median 300] [--sigma 1.0] [--passes 2]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def long_tailed(rows: list[dict], count: int, median: float, sigma: float, cap: int, seed: int) -> list[dict]:
    """`count` SFT rows whose reasoning is repeated to a log-normal target length (in characters, about
    one token each for this tokenizer: the realised token lengths are measured after encoding)."""
    rng = random.Random(seed)
    out = []
    for k in range(count):
        row = rows[k % len(rows)]
        target = min(cap, max(16, int(rng.lognormvariate(0.0, sigma) * median)))
        unit = row["reasoning"].strip() + " "
        out.append({**row, "id": f"{row['id']}-x{k}", "reasoning": (unit * (target // len(unit) + 1))[:target]})
    return out


def grouped_batches(lengths: list[int], order: list[int], batch_size: int, seed: int, mega: int = 50) -> list[list[int]]:
    """`group_by_length`-style batches: mega-batches of `mega` x `batch_size` samples in `order`,
    each sorted by length (longest first) and cut into batches; the batches shuffled."""
    batches = []
    for start in range(0, len(order), mega * batch_size):
        chunk = sorted(order[start:start + mega * batch_size], key=lambda i: -lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def packed_rows(lengths: list[int], order: list[int], pack_length: int) -> list[list[int]]:
    """Every sample once, in rows of at most `pack_length` tokens: the trainer's first-fit plan
    (`packing.plan_steps`) over the same order, ending where the order does."""
    from model_src.train.packing import plan_steps

    return [row for step in plan_steps(lengths, iter(order), None, 1, pack_length) for row in step]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=8, help="padded arms: samples per step")
    parser.add_argument("--pack-length", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=1, help="packed: rows per step")
    parser.add_argument("--median", type=float, default=300, help="median response length (characters)")
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma of the response length")
    parser.add_argument("--passes", type=int, default=2, help="passes over the samples, every arm (interleaved)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "packing.json"))
    args = parser.parse_args()

    import torch

    from model_src.config import load_config
    from model_src.data.curate import curate
    from model_src.data.schema import SPLITS, read_split
    from model_src.model.build import build_model, build_processor, train_tokenizer
    from model_src.model.inputs import sft_example
    from model_src.train.packed_attention import packed_attention
    from model_src.train.packing import collate_packed, encode

    torch.manual_seed(0)
    cfg = load_config("small")
    with tempfile.TemporaryDirectory() as tmp:
        curate(ROOT / "data" / "raw", {n: Path(tmp) / n for n in (*SPLITS, "report")}, cfg.curate, validate=False)
        base = read_split(Path(tmp) / "sft")
    tokenizer = train_tokenizer([t for r in base for t in (r["caption"], r["question"], r["reasoning"])],
                                cfg.tokenizer.vocab_size)
    processor = build_processor(tokenizer, cfg.model)
    rows = long_tailed(base, args.samples, args.median, args.sigma, cap=args.pack_length - 200, seed=0)
    model = build_model(cfg.model, tokenizer, cfg.seed)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    started = time.monotonic()
    with torch.no_grad():  # the same preparation for every arm, before any timer
        encoded = [encode(model, processor, sft_example(processor, r)) for r in rows]
    prepare_s = time.monotonic() - started
    lengths = [s.length for s in encoded]
    too_long = [n for n in lengths if n > args.pack_length]
    if too_long:
        raise SystemExit(f"{len(too_long)} samples exceed --pack-length {args.pack_length} (longest {max(too_long)})")
    q = statistics.quantiles(lengths, n=20)
    print(f"{len(rows)} samples, tokens: median {statistics.median(lengths):.0f}, mean {statistics.mean(lengths):.0f}, "
          f"p90 {q[17]:.0f}, p95 {q[18]:.0f}, max {max(lengths)}; encoded once in {prepare_s:.1f} s (outside every timer)")

    order = list(range(len(rows)))
    random.Random(1).shuffle(order)
    b = args.batch_size
    arms = {
        "random": [[[i] for i in order[k:k + b]] for k in range(0, len(order), b)],
        "grouped": [[[i] for i in batch] for batch in grouped_batches(lengths, order, b, seed=2)],
        "packed": [],
    }
    rows_packed = packed_rows(lengths, order, args.pack_length)
    arms["packed"] = [rows_packed[k:k + args.rows] for k in range(0, len(rows_packed), args.rows)]
    for name, steps in arms.items():  # every arm trains on every sample exactly once
        assert sorted(i for step in steps for row in step for i in row) == sorted(order), name

    pad = processor.tokenizer.pad_token_id
    models, optimizers, stats = {}, {}, {}
    for name in arms:  # one model per arm, each from the same initial weights
        models[name] = build_model(cfg.model, tokenizer, cfg.seed)
        models[name].load_state_dict(initial)
        optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-4)
        stats[name] = {"real_tokens": 0, "slots": 0, "seconds": 0.0, "steps": 0}

    def train_step(name: str, step: list[list[int]]) -> None:
        width = args.pack_length if name == "packed" else max(lengths[row[0]] for row in step)
        t0 = time.perf_counter()
        batch = collate_packed([[encoded[i] for i in row] for row in step], width, pad)
        real = batch.pop("num_real_tokens")
        optimizers[name].zero_grad(set_to_none=True)
        models[name](**batch).loss.backward()
        optimizers[name].step()
        s = stats[name]
        s["seconds"] += time.perf_counter() - t0
        s["real_tokens"] += real
        s["slots"] += len(step) * width
        s["steps"] += 1

    # Interleaved, one step of each arm in turn (the order rotating), for --passes passes over the
    # samples: on a shared machine the speed drifts by 10-20% over a minute, and arms run one after
    # the other would carry that drift into their ratio.
    with packed_attention(models["packed"]):  # as the trainer does: packed rows attend per sample
        names = list(arms)
        for _ in range(args.passes):
            for k in range(max(len(steps) for steps in arms.values())):
                for name in names[k % len(names):] + names[:k % len(names)]:
                    if k < len(arms[name]):
                        train_step(name, arms[name][k])
    results = {}
    for name, s in stats.items():
        results[name] = {**s, "tokens_per_s": s["real_tokens"] / s["seconds"], "fill": s["real_tokens"] / s["slots"]}
        r = results[name]
        print(f"{name:>8}: {r['tokens_per_s']:8.0f} useful tokens/s  fill {r['fill']:6.1%}  "
              f"{r['steps']} steps in {r['seconds']:.1f} s", flush=True)
    vs_random = results["packed"]["tokens_per_s"] / results["random"]["tokens_per_s"]
    vs_grouped = results["packed"]["tokens_per_s"] / results["grouped"]["tokens_per_s"]
    print(f"packed / random padding: {vs_random:.2f}x (goal >= 2.0x); packed / length-grouped: {vs_grouped:.2f}x "
          f"(goal > 1.0x)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "lengths": {"median": statistics.median(lengths),
                                          "mean": statistics.mean(lengths), "p90": q[17], "p95": q[18],
                                          "max": max(lengths)}, "arms": results,
                                          "packed_vs_random": vs_random, "packed_vs_grouped": vs_grouped}, indent=2))


if __name__ == "__main__":
    main()
