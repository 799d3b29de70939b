"""counting: how many objects of one kind, among clutter of other kinds, sometimes overlapping."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from model_src.data.domains.common import COLORS, SHAPES, alt_text, draw_shape, light_colour, make_row, pick, png_bytes

GENERIC = ["objects", "shapes on a table", "many things", "clutter"]
SIZE = 112


def factual_caption(task: str, meta: dict) -> str:
    return (f"{meta['count']} {meta['colour']} {meta['shape']}s among {meta['clutter']} other objects"
            f"{' that overlap' if meta['overlap'] else ''}.")


def _row(rng, i, split):
    colour, shape = pick(rng, list(COLORS)), pick(rng, SHAPES)
    count, clutter = int(rng.integers(1, 10)), int(rng.integers(0, 8))
    overlap = bool(rng.random() < 0.3)
    image = Image.new("RGB", (SIZE, SIZE), light_colour(rng))
    draw = ImageDraw.Draw(image)
    others = [(c, s) for c in COLORS for s in SHAPES if (c, s) != (colour, shape)]
    kinds = [(colour, shape)] * count + [others[int(k)] for k in rng.integers(len(others), size=clutter)]
    side = 14
    # targets sit in distinct cells of a 7x7 grid and are drawn last, so none is hidden; with
    # overlap the clutter is placed freely underneath them
    cells = [int(c) for c in rng.choice(49, size=len(kinds), replace=False)]
    positions = [(c % 7 * 16 + 1, c // 7 * 16 + 1) for c in cells]
    if overlap:
        positions[count:] = [(int(rng.integers(0, SIZE - side)), int(rng.integers(0, SIZE - side)))
                             for _ in range(clutter)]
    for k in list(range(count, len(kinds))) + list(range(count)):
        (c, s), (x, y) = kinds[k], positions[k]
        draw_shape(draw, s, (x, y, x + side, y + side), COLORS[c])
    meta = {"colour": colour, "shape": shape, "count": count, "clutter": clutter, "overlap": overlap}
    return make_row(
        row_id=f"counting-{split}-{i:06d}", domain="counting", task="count_objects", split=split,
        images=[png_bytes(image)], question=f"How many {colour} {shape}s are in the image?", answer=str(count),
        answer_type="integer", difficulty=min(1.0, count / 12 + clutter / 16 + 0.2 * overlap),
        source="generated:counting", caption=alt_text(rng, factual_caption("count_objects", meta), GENERIC),
        reasoning=f"Counting the {colour} {shape}s one by one gives {count}.", meta=meta)


def rows(rng: np.random.Generator, n: int, split: str) -> list[dict]:
    return [_row(rng, i, split) for i in range(n)]
