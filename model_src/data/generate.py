"""`thinkpipe data`: the raw corpus, generated deterministically from a seed into `data/raw/`.

Domains of the walking skeleton:
- `stem/arithmetic`: rendered sums, differences and products of two small numbers;
- `digits/digit_recognition`: the real handwritten digits scikit-learn ships (not generated);
- `digits/digit_sum`: two of those digits side by side, "what is their sum?".

Same seed and same pinned libraries give byte-identical files, so `data.dvc` can pin the result and
`make data` can regenerate it when the DVC remote is empty and check the hash.

    thinkpipe data --out data/raw --seed 1234
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from model_src.data.schema import ROW_SCHEMA


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 1234
    num_arithmetic: int = 600
    num_digit_recognition: int = 600
    num_digit_sum: int = 300
    digit_px: int = 56  # one sklearn 8x8 digit is upscaled to this square


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _arithmetic_rows(cfg: GeneratorConfig, rng: np.random.Generator) -> list[dict]:
    font = ImageFont.load_default(size=22)
    ops = [("+", "plus", lambda a, b: a + b), ("-", "minus", lambda a, b: a - b), ("x", "times", lambda a, b: a * b)]
    rows = []
    for i in range(cfg.num_arithmetic):
        sym, word, fn = ops[int(rng.integers(len(ops)))]
        hi = 10 if sym == "x" else 50
        a, b = int(rng.integers(0, hi)), int(rng.integers(0, hi))
        if sym == "-" and b > a:
            a, b = b, a
        result = fn(a, b)
        background = tuple(int(v) for v in rng.integers(200, 256, size=3))
        ink = tuple(int(v) for v in rng.integers(0, 90, size=3))
        image = Image.new("RGB", (112, 56), background)
        ImageDraw.Draw(image).text((8, 14), f"{a} {sym} {b}", fill=ink, font=font)
        expression = f"{a} {sym} {b}"
        rows.append(
            {
                "id": f"stem-arith-{i:06d}",
                "domain": "stem",
                "task": "arithmetic",
                "images": [png_bytes(image)],
                "question": "Compute the result of the expression in the image.",
                "answer": str(result),
                "answer_type": "integer",
                "difficulty": 0.2 if sym != "x" else 0.5,
                "source": "generated:arithmetic",
                "caption": f"The image shows the expression {expression}, {a} {word} {b}.",
                "reasoning": f"The image shows {expression}. {a} {word} {b} is {result}.",
            }
        )
    return rows


def _digit_image(pixels_8x8: np.ndarray, size: int) -> Image.Image:
    # sklearn digits are 16 grey levels, ink high; render dark ink on white like paper
    grey = (255 - pixels_8x8 * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.BILINEAR).convert("RGB")


def _digit_rows(cfg: GeneratorConfig, rng: np.random.Generator) -> list[dict]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, targets = digits.images, digits.target
    order = rng.permutation(len(images))
    rows = []
    for i in range(cfg.num_digit_recognition):
        idx = int(order[i % len(order)])
        label = int(targets[idx])
        rows.append(
            {
                "id": f"digits-rec-{i:06d}",
                "domain": "digits",
                "task": "digit_recognition",
                "images": [png_bytes(_digit_image(images[idx], cfg.digit_px))],
                "question": "Which digit is written in the image?",
                "answer": str(label),
                "answer_type": "integer",
                "difficulty": 0.1,
                "source": f"sklearn:load_digits#{idx}",
                "caption": f"A handwritten digit {label}.",
                "reasoning": f"The handwritten digit is {label}.",
            }
        )
    for i in range(cfg.num_digit_sum):
        left, right = (int(v) for v in rng.integers(0, len(images), size=2))
        a, b = int(targets[left]), int(targets[right])
        canvas = Image.new("RGB", (2 * cfg.digit_px, cfg.digit_px), (255, 255, 255))
        canvas.paste(_digit_image(images[left], cfg.digit_px), (0, 0))
        canvas.paste(_digit_image(images[right], cfg.digit_px), (cfg.digit_px, 0))
        rows.append(
            {
                "id": f"digits-sum-{i:06d}",
                "domain": "digits",
                "task": "digit_sum",
                "images": [png_bytes(canvas)],
                "question": "What is the sum of the two handwritten digits?",
                "answer": str(a + b),
                "answer_type": "integer",
                "difficulty": 0.4,
                "source": f"sklearn:load_digits#{left}+{right}",
                "caption": f"Two handwritten digits, {a} and {b}.",
                "reasoning": f"The left digit is {a} and the right digit is {b}. {a} plus {b} is {a + b}.",
            }
        )
    return rows


def generate_corpus(out_dir: str | Path, cfg: GeneratorConfig = GeneratorConfig()) -> dict[str, int]:
    """Write one parquet shard per domain into `out_dir`; returns rows per shard."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # one child generator per domain, so adding a domain never shifts another domain's rows
    seeds = np.random.SeedSequence(cfg.seed).spawn(2)
    shards = {
        "stem": _arithmetic_rows(cfg, np.random.default_rng(seeds[0])),
        "digits": _digit_rows(cfg, np.random.default_rng(seeds[1])),
    }
    counts = {}
    for name, rows in shards.items():
        table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
        pq.write_table(table, out / f"{name}.parquet", compression="zstd")
        counts[name] = table.num_rows
    return counts
