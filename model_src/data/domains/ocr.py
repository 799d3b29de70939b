"""ocr: rendered text lines in varied fonts, sizes, colours and rotations, with pixel noise."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from model_src.data.domains.common import (FONT_FILES, add_noise, alt_text, dark_colour, font, light_colour,
                                           make_row, pick, png_bytes)

WORDS = ("data model train vision token image label river stone green cloud paper light north seven "
         "market garden silver window orbit pixel signal bridge forest mirror")
GENERIC = ["text", "a sign", "scanned line", "photo of text"]


def factual_caption(task: str, meta: dict) -> str:
    return f'The text "{meta["text"]}" written in {meta["font"].rsplit(".", 1)[0]}.'


def _line(rng, i, split):
    text = " ".join(pick(rng, WORDS.split()) for _ in range(int(rng.integers(1, 4))))
    if rng.random() < 0.3:
        text += f" {int(rng.integers(10, 1000))}"
    name, size = pick(rng, FONT_FILES), int(rng.integers(12, 22))
    while size > 8 and font(size, name).getlength(text) > 210:  # the whole line must stay visible
        size -= 1
    angle, sigma = float(rng.uniform(-8, 8)), float(rng.uniform(0, 18))
    canvas = Image.new("RGB", (224, 56), light_colour(rng))
    ImageDraw.Draw(canvas).text((6, 14), text, fill=dark_colour(rng), font=font(size, name))
    canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=canvas.getpixel((0, 0)))
    canvas = add_noise(canvas, rng, sigma)
    meta = {"text": text, "font": name, "size": size, "angle": round(angle, 2), "noise": round(sigma, 2)}
    return make_row(
        row_id=f"ocr-line-{split}-{i:06d}", domain="ocr", task="text_line", split=split,
        images=[png_bytes(canvas)], question="What text is written in the image?", answer=text,
        answer_type="text", difficulty=min(1.0, 0.1 + abs(angle) / 20 + sigma / 40 + len(text) / 80),
        source="generated:ocr", caption=alt_text(rng, factual_caption("text_line", meta), GENERIC),
        reasoning=f'Reading the characters from left to right: "{text}".', meta=meta)


def rows(rng: np.random.Generator, n: int, split: str) -> list[dict]:
    return [_line(rng, i, split) for i in range(n)]
