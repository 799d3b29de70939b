"""Useful (non-pad) tokens/s with sample packing vs padded batches, side by side in one run.

Same model (the `small` profile's, random init), same curated SFT mix, same number of optimizer
steps. Padded: `batch_size` samples per step, padded to the longest. Packed: `batch_size` rows of
`pack_length` tokens filled with whole samples. Goal: >= 2.0x useful tokens/s and >= 95% of slots
filled.

    .venv/bin/python bench/bench_packing.py [--steps 60] [--pack-length 384] [--rows 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8, help="padded: samples per step")
    parser.add_argument("--pack-length", type=int, default=384)
    parser.add_argument("--rows", type=int, default=3, help="packed: rows per step")
    args = parser.parse_args()

    from model_src.config import load_config
    from model_src.data.curate import curate
    from model_src.data.schema import read_split
    from model_src.data.schema import SPLITS
    from model_src.model.build import build_model, build_processor, train_tokenizer
    from model_src.model.inputs import sft_example
    from model_src.train.supervised import train_supervised

    cfg = load_config("small")
    with tempfile.TemporaryDirectory() as tmp:
        curate(ROOT / "data" / "raw", {n: Path(tmp) / n for n in (*SPLITS, "report")}, cfg.curate, validate=False)
        rows = read_split(Path(tmp) / "sft")
    tokenizer = train_tokenizer([t for r in rows for t in (r["caption"], r["question"], r["reasoning"])],
                                cfg.tokenizer.vocab_size)
    processor = build_processor(tokenizer, cfg.model)
    examples = [sft_example(processor, r) for r in rows]
    weights = [r["sample_weight"] for r in rows]
    print(f"{len(examples)} SFT examples from the curated mix; model: small profile")

    results = {}
    for name, overrides in (("padded", dict(batch_size=args.batch_size, pack_length=0)),
                            ("packed", dict(batch_size=args.rows, pack_length=args.pack_length))):
        train_cfg = dataclasses.replace(cfg.sft, num_steps=args.steps, warmup_steps=0, checkpoint_every=0, **overrides)
        model = build_model(cfg.model, tokenizer, cfg.seed)
        started = time.monotonic()
        summary = train_supervised(model, processor, examples, train_cfg, cfg.seed, lambda m, s: None,
                                   desc=name, weights=weights)
        summary["wall_seconds"] = time.monotonic() - started
        results[name] = summary
        print(f"{name:>6}: {summary['tokens_per_s']:8.0f} useful tokens/s  "
              f"slots filled {summary['packing_efficiency']:.1%}  train {summary['train_seconds']:.1f} s  "
              f"(wall incl. planning {summary['wall_seconds']:.1f} s)", flush=True)
    ratio = results["packed"]["tokens_per_s"] / results["padded"]["tokens_per_s"]
    print(f"packed / padded useful tokens/s: {ratio:.2f}x (goal >= 2.0x); "
          f"packed fill {results['packed']['packing_efficiency']:.1%} (goal >= 95%)")


if __name__ == "__main__":
    main()
