"""Drawing and row-building helpers every domain generator shares.

Fonts come from matplotlib's bundled DejaVu/STIX files (pinned in the lock), so rendering is
byte-identical across machines with the same lock.
"""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLORS = {
    "red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220),
    "yellow": (225, 195, 20), "purple": (140, 60, 180), "orange": (240, 130, 30),
}
SHAPES = ("circle", "square", "triangle")
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
              "DejaVuSans-Oblique.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneral.ttf", "cmr10.ttf")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


@lru_cache(maxsize=64)
def font(size: int, name: str = "DejaVuSans.ttf") -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def light_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(215, 256, size=3))


def dark_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 90, size=3))


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x1 + x2) // 2, y1), (x2, y2), (x1, y2)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def norm_box(box: tuple[float, float, float, float], width: int, height: int) -> list[int]:
    """Pixel box -> `[x1, y1, x2, y2]` integers in 0-999 (the GLM-4.1V grounding convention).

    >>> norm_box((0, 0, 56, 28), 112, 56)
    [0, 0, 500, 500]
    """
    x1, y1, x2, y2 = box
    scale = [1000 / width, 1000 / height, 1000 / width, 1000 / height]
    return [min(999, max(0, int(v * s))) for v, s in zip((x1, y1, x2, y2), scale)]


def box_text(box: list[int]) -> str:
    return "[" + ",".join(str(v) for v in box) + "]"


def add_noise(image: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, sigma, size=pixels.shape)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8), mode=image.mode)


def alt_text(rng: np.random.Generator, factual: str, generic: list[str]) -> str:
    """The caption a scraped corpus would carry: sometimes factual, often vague or a file name,
    which is what factual recaptioning (curation) repairs."""
    roll = rng.random()
    if roll < 0.4:
        return factual
    if roll < 0.8:
        return pick(rng, generic)
    return f"IMG_{int(rng.integers(10_000)):04d}.png"


def make_row(*, row_id: str, domain: str, task: str, split: str, images: list[bytes], question: str,
             answer: str, answer_type: str, difficulty: float, source: str, caption: str, reasoning: str,
             meta: dict, frame_times: list[float] | None = None) -> dict:
    return {
        "id": row_id, "domain": domain, "task": task, "split": split, "images": images,
        "frame_times": list(frame_times or []), "question": question, "answer": answer,
        "answer_type": answer_type, "difficulty": float(difficulty), "source": source,
        "caption": caption, "reasoning": reasoning, "meta": json.dumps(meta, sort_keys=True),
    }


LETTERS = "ABCD"


def choice_variant(row: dict, correct: str, distractors: list[str], rng: np.random.Generator) -> dict:
    """The same question as multiple choice: options A-D, the answer is the letter."""
    options = [correct, *distractors[:3]]
    order = rng.permutation(len(options))
    shuffled = [options[i] for i in order]
    letter = LETTERS[shuffled.index(correct)]
    listing = " ".join(f"({LETTERS[i]}) {opt}" for i, opt in enumerate(shuffled))
    meta = {**json.loads(row["meta"]), "options": shuffled}
    return {
        **row,
        "id": row["id"] + "-mc",
        "task": row["task"] + "_choice",
        "question": f"{row['question']} Choose one option: {listing}. Answer with the letter.",
        "answer": letter,
        "answer_type": "choice",
        "reasoning": f"{row['reasoning']} That is option ({letter}).",
        "meta": json.dumps(meta, sort_keys=True),
    }
