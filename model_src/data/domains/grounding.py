"""grounding: scenes of two to five coloured shapes; "where is the red circle?" -> its box.

Boxes are `[x1,y1,x2,y2]` integers normalised to 0-999; the named object is unique in its scene.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from model_src.data.domains.common import (COLORS, SHAPES, alt_text, box_text, draw_shape, light_colour, make_row,
                                           norm_box, png_bytes)

GENERIC = ["shapes", "a scene", "coloured objects", "toy scene"]
SIZE = 112
GRID = 4  # objects sit in distinct cells of a 4x4 grid, so they never overlap


def factual_caption(task: str, meta: dict) -> str:
    things = "; ".join(f"a {o['colour']} {o['shape']} at {box_text(o['box'])}" for o in meta["objects"])
    return f"A scene with {len(meta['objects'])} objects: {things}."


def scene(rng, count: int):
    """`count` objects with distinct (colour, shape) pairs in distinct grid cells."""
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    chosen = rng.choice(len(pairs), size=count, replace=False)
    cells = rng.choice(GRID * GRID, size=count, replace=False)
    cell = SIZE // GRID
    image = Image.new("RGB", (SIZE, SIZE), light_colour(rng))
    draw = ImageDraw.Draw(image)
    objects = []
    for pair_index, cell_index in zip(chosen, cells):
        colour, shape = pairs[int(pair_index)]
        side = int(rng.integers(cell // 2, cell - 2))
        x0 = (int(cell_index) % GRID) * cell + int(rng.integers(0, cell - side + 1))
        y0 = (int(cell_index) // GRID) * cell + int(rng.integers(0, cell - side + 1))
        box = (x0, y0, x0 + side, y0 + side)
        draw_shape(draw, shape, box, COLORS[colour])
        objects.append({"colour": colour, "shape": shape, "box": norm_box(box, SIZE, SIZE)})
    return image, objects


def _row(rng, i, split):
    image, objects = scene(rng, int(rng.integers(2, 6)))
    target = objects[int(rng.integers(len(objects)))]
    answer = box_text(target["box"])
    meta = {"objects": objects}
    return make_row(
        row_id=f"grounding-{split}-{i:06d}", domain="grounding", task="locate_object", split=split,
        images=[png_bytes(image)],
        question=f"Where is the {target['colour']} {target['shape']}? Answer with its box [x1,y1,x2,y2] in 0-999 coordinates.",
        answer=answer, answer_type="box", difficulty=0.2 + 0.1 * len(objects), source="generated:grounding",
        caption=alt_text(rng, factual_caption("locate_object", meta), GENERIC),
        reasoning=f"There are {len(objects)} objects. The {target['colour']} {target['shape']} spans {answer}.",
        meta=meta)


def rows(rng: np.random.Generator, n: int, split: str) -> list[dict]:
    return [_row(rng, i, split) for i in range(n)]
