"""digits: the real handwritten digits scikit-learn ships (not generated), alone and as sums.

Train and eval draw from disjoint halves of sklearn's 1,797 images, so no eval digit is ever
trained on.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from model_src.data.domains.common import alt_text, make_row, png_bytes

GENERIC = ["handwriting", "a scanned digit", "number", "digits"]
PX = 56  # one 8x8 digit is upscaled to this square


def factual_caption(task: str, meta: dict) -> str:
    if task == "digit_recognition":
        return f"A handwritten digit {meta['labels'][0]}."
    return f"Two handwritten digits, {meta['labels'][0]} and {meta['labels'][1]}."


@lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def _image(pixels_8x8: np.ndarray) -> Image.Image:
    # sklearn digits are 16 grey levels, ink high; render dark ink on white like paper
    grey = (255 - pixels_8x8 * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").resize((PX, PX), Image.Resampling.BILINEAR).convert("RGB")


def rows(rng: np.random.Generator, n: int, split: str) -> list[dict]:
    images, targets = _digits()
    pool = np.arange(len(images))[(np.arange(len(images)) % 2 == (1 if split == "eval" else 0))]
    order = rng.permutation(pool)
    out = []
    n_rec = (2 * n) // 3
    for i in range(n_rec):
        idx = int(order[i % len(order)])
        label = int(targets[idx])
        meta = {"indices": [idx], "labels": [label]}
        out.append(make_row(
            row_id=f"digits-rec-{split}-{i:06d}", domain="digits", task="digit_recognition", split=split,
            images=[png_bytes(_image(images[idx]))], question="Which digit is written in the image?",
            answer=str(label), answer_type="integer", difficulty=0.1, source=f"sklearn:load_digits#{idx}",
            caption=alt_text(rng, factual_caption("digit_recognition", meta), GENERIC),
            reasoning=f"The handwritten digit is {label}.", meta=meta))
    for i in range(n - n_rec):
        left, right = (int(v) for v in rng.choice(pool, size=2))
        a, b = int(targets[left]), int(targets[right])
        canvas = Image.new("RGB", (2 * PX, PX), (255, 255, 255))
        canvas.paste(_image(images[left]), (0, 0))
        canvas.paste(_image(images[right]), (PX, 0))
        meta = {"indices": [left, right], "labels": [a, b]}
        out.append(make_row(
            row_id=f"digits-sum-{split}-{i:06d}", domain="digits", task="digit_sum", split=split,
            images=[png_bytes(canvas)], question="What is the sum of the two handwritten digits?",
            answer=str(a + b), answer_type="integer", difficulty=0.4, source=f"sklearn:load_digits#{left}+{right}",
            caption=alt_text(rng, factual_caption("digit_sum", meta), GENERIC),
            reasoning=f"The left digit is {a} and the right digit is {b}. {a} plus {b} is {a + b}.", meta=meta))
    return out
