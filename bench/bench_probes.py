"""What can a model of a profile's size learn to read? SFT on one probe task at a time, from the
last run's pretrained model, then greedy accuracy on fresh held-out rows with and without images.

Each probe isolates one visual skill on 112 x 112 images, which the vision tower sees whole: 8 x 8
patches, 4 x 4 merged tokens. (Before `model.max_pixels` meant pixels of one image, transformers'
two-frame count halved the `small` profile's bound and shrank them to 56 x 56: bench/RESULTS.md.)

- `colour`: one large shape; "What colour is the shape?" (a global attribute, six answers);
- `count_all`: 1-9 shapes, one per cell of a 4 x 4 grid of 28-pixel cells (one merged vision token
  per cell); "How many shapes are in the image?" (a sum over the image, no lookup);
- `count_kind`: the same grid with 1-6 shapes of the asked kind among 0-5 others; "How many red
  circles ...?" (the counting domain's task, without overlap and on the token grid);
- any corpus domain (`digits`, `ocr`, `chart`, ...): that domain's generated rows, all its tasks; with
  every SFT step on one domain, whether the model can learn to read it at all.

Rows are generated fresh (train at seed 99, held-out at seed 777) and scored by the pipeline's
verifiers (`colour` by the OCR verifier, exact answers score 1). `--model KEY=VALUE` (repeatable)
starts instead from a freshly initialised model of another size (the profile's model settings with
these changed, the pretrained model's tokenizer and processor): whether size is what limits a skill.
Writes bench/out/probes.json (`--out`).

    .venv/bin/python bench/bench_probes.py [--probes colour,count_all,count_kind,digits] [--steps 1000 2500]
        [--rows 3000] [--jobs 2] [--model text_num_layers=4 --model text_hidden_size=256]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "bench" / "out"
SYNTHETIC = ("colour", "count_all", "count_kind")
DEFAULT_PROBES = (*SYNTHETIC, "digits")
TRAIN_SEED, EVAL_SEED = 99, 777
CELL, GRID = 28, 4


def _grid_scene(rng, kinds: list[tuple[str, str]]):
    """`kinds` (colour, shape) drawn in distinct cells of the 4 x 4 grid, 18-24 pixels each."""
    from PIL import Image, ImageDraw

    from model_src.data.domains.common import COLORS, draw_shape, light_colour

    image = Image.new("RGB", (CELL * GRID, CELL * GRID), light_colour(rng))
    draw = ImageDraw.Draw(image)
    for (colour, shape), cell in zip(kinds, rng.choice(GRID * GRID, size=len(kinds), replace=False)):
        side = int(rng.integers(18, 25))
        x = int(cell) % GRID * CELL + int(rng.integers(1, CELL - side))
        y = int(cell) // GRID * CELL + int(rng.integers(1, CELL - side))
        draw_shape(draw, shape, (x, y, x + side, y + side), COLORS[colour])
    return image


def probe_row(probe: str, rng, i: int, split: str) -> dict:
    from PIL import Image, ImageDraw

    from model_src.data.domains.common import COLORS, SHAPES, draw_shape, light_colour, make_row, pick, png_bytes

    common = dict(row_id=f"probe-{probe}-{split}-{i:06d}", domain="counting", task=probe, split=split,
                  difficulty=0.2, source=f"probe:{probe}", caption="", meta={})
    if probe == "colour":
        colour, shape = pick(rng, list(COLORS)), pick(rng, SHAPES)
        image = Image.new("RGB", (112, 112), light_colour(rng))
        side = int(rng.integers(30, 60))
        x, y = (int(v) for v in rng.integers(0, 112 - side, size=2))
        draw_shape(ImageDraw.Draw(image), shape, (x, y, x + side, y + side), COLORS[colour])
        row = make_row(images=[png_bytes(image)], question="What colour is the shape?", answer=colour,
                       answer_type="text", reasoning=f"The shape is {colour}.", **common)
        return {**row, "verifier": "ocr"}
    if probe == "count_all":
        count = int(rng.integers(1, 10))
        kinds = [(pick(rng, list(COLORS)), pick(rng, SHAPES)) for _ in range(count)]
        return make_row(images=[png_bytes(_grid_scene(rng, kinds))], question="How many shapes are in the image?",
                        answer=str(count), answer_type="integer",
                        reasoning=f"Counting the shapes one by one gives {count}.", **common)
    if probe == "count_kind":
        colour, shape = pick(rng, list(COLORS)), pick(rng, SHAPES)
        count, clutter = int(rng.integers(1, 7)), int(rng.integers(0, 6))
        others = [(c, s) for c in COLORS for s in SHAPES if (c, s) != (colour, shape)]
        kinds = [(colour, shape)] * count + [others[int(k)] for k in rng.integers(len(others), size=clutter)]
        return make_row(images=[png_bytes(_grid_scene(rng, kinds))],
                        question=f"How many {colour} {shape}s are in the image?", answer=str(count),
                        answer_type="integer", reasoning=f"Counting the {colour} {shape}s one by one gives {count}.",
                        **common)
    raise ValueError(f"unknown probe {probe!r}; known: {SYNTHETIC} and the corpus domains")


def probe_rows(probe: str, n: int, seed: int, split: str) -> list[dict]:
    import numpy as np

    from model_src.data.domains import DOMAINS
    from model_src.data.generate import GeneratorConfig, domain_rows

    if probe in DOMAINS:
        return domain_rows(GeneratorConfig(seed=seed), probe, split, n)
    rng = np.random.default_rng([seed, len(probe)])
    return [probe_row(probe, rng, i, split) for i in range(n)]


def run_probe(probe: str, init: str, steps: list[int], rows: int, held_out: int, profile: str, workdir: str) -> dict:
    from bench_reading import reading_table
    from bench_rlcs import warm_up

    from model_src.config import load_config

    budget = load_config(profile).evaluate.max_new_tokens  # the profile's evaluation budget: its answers must fit
    train, evaluation = probe_rows(probe, rows, TRAIN_SEED, "train"), probe_rows(probe, held_out, EVAL_SEED, "eval")
    model, done, tables = Path(init), 0, {}
    for target in steps:
        started = time.monotonic()
        model = warm_up(model, train, target - done, done, Path(workdir) / f"{probe}-{target}", profile)
        done = target
        tables[str(target)] = {"seconds": round(time.monotonic() - started),
                               "table": reading_table(model, evaluation, 16, budget)}
    return {"probe": probe, "tables": tables}


def fresh_model(pretrained: Path, profile: str, overrides: list[str], dest: Path) -> Path:
    """A randomly initialised model of `profile`'s model settings with `overrides`, saved with the
    pretrained model's processor (same tokenizer, so the same prompts and answers)."""
    from model_src.config import load_config
    from model_src.model.build import build_model, load_model_and_processor

    cfg = load_config(profile, [f"model.{o}" for o in overrides])
    _, processor = load_model_and_processor(str(pretrained))
    model = build_model(cfg.model, processor.tokenizer, seed=0)
    print(f"fresh model ({', '.join(overrides)}): {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="thinkpipe")
    parser.add_argument("--profile", default="small", help="whose SFT settings to train with and token budget to answer in")
    parser.add_argument("--probes", default=",".join(DEFAULT_PROBES),
                        help=f"comma-separated, from {', '.join(SYNTHETIC)} and the corpus domains")
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 2500], help="SFT steps at which to measure")
    parser.add_argument("--rows", type=int, default=3000, help="fresh training rows per probe")
    parser.add_argument("--held-out", type=int, default=60, help="fresh held-out rows per probe")
    parser.add_argument("--jobs", type=int, default=2, help="probes at once (one thread each)")
    parser.add_argument("--out", default="probes.json", help="file name under bench/out/")
    parser.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                        help="start from a fresh model with this model setting changed (repeatable)")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from model_src.data.domains import DOMAINS

    probes = args.probes.split(",")
    unknown = sorted(set(probes) - set(SYNTHETIC) - set(DOMAINS))
    if unknown:
        raise SystemExit(f"--probes: unknown {unknown}; known: {', '.join((*SYNTHETIC, *DOMAINS))}")

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from bench_reading import print_table
    from bench_rlcs import last_run_model_and_eval, one_thread

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-probes-"))
    init, _, _ = last_run_model_and_eval(args.experiment, "pretrain", "all", tmp)
    if args.model:
        init = fresh_model(init, args.profile, args.model, tmp / "fresh")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=one_thread) as pool:
        results = list(pool.map(run_probe, probes, *zip(*[(str(init), args.steps, args.rows, args.held_out,
                                                           args.profile, str(tmp))] * len(probes))))
    for result in results:
        for steps, entry in result["tables"].items():
            print_table(f"probe {result['probe']}: {steps} SFT steps on {args.rows} rows from the pretrained "
                        f"model ({entry['seconds']} s)", entry["table"])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / args.out).write_text(json.dumps({"model": args.model, "results": results}, indent=1))
    print(f"\n{time.monotonic() - started:.0f} s; tables in {OUT / args.out}")


if __name__ == "__main__":
    main()
