"""video: short frame sequences with timestamps (a list of frames plus `frame_times`).

Tasks: when does an object appear (seconds, 1 s tolerance) and which way does an object move.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from model_src.data.domains.common import COLORS, SHAPES, alt_text, draw_shape, light_colour, make_row, pick, png_bytes

GENERIC = ["video", "clip", "animation", "frames"]
SIZE, SIDE = 56, 12


def factual_caption(task: str, meta: dict) -> str:
    if task == "appear":
        return f"A {meta['colour']} {meta['shape']} appears at {meta['appear_s']} seconds."
    return f"A {meta['colour']} {meta['shape']} moves {meta['direction']}."


def _fmt(seconds: float) -> str:
    return f"{seconds:g}"


def _row(rng, i, split):
    task = pick(rng, ["appear", "move"])
    colour, shape = pick(rng, list(COLORS)), pick(rng, SHAPES)
    n_frames, fps = int(rng.integers(4, 7)), pick(rng, [1, 2])
    times = [k / fps for k in range(n_frames)]
    background = light_colour(rng)
    frames = []
    if task == "appear":
        first = int(rng.integers(1, n_frames))
        x, y = (int(v) for v in rng.integers(2, SIZE - SIDE - 2, size=2))
        for k in range(n_frames):
            frame = Image.new("RGB", (SIZE, SIZE), background)
            if k >= first:
                draw_shape(ImageDraw.Draw(frame), shape, (x, y, x + SIDE, y + SIDE), COLORS[colour])
            frames.append(png_bytes(frame))
        meta = {"colour": colour, "shape": shape, "appear_s": times[first], "frame_times": times}
        question = f"At what time, in seconds, does the {colour} {shape} first appear?"
        answer, answer_type = _fmt(times[first]), "seconds"
        reasoning = (f"The frames are at {', '.join(_fmt(t) for t in times)} s. The {colour} {shape} is absent "
                     f"before frame {first + 1} and present from {_fmt(times[first])} s.")
    else:
        direction = pick(rng, ["left", "right", "up", "down"])
        dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
        step = (SIZE - SIDE - 4) // (n_frames - 1)
        x0 = 2 if dx > 0 else SIZE - SIDE - 2 if dx < 0 else int(rng.integers(2, SIZE - SIDE - 2))
        y0 = 2 if dy > 0 else SIZE - SIDE - 2 if dy < 0 else int(rng.integers(2, SIZE - SIDE - 2))
        for k in range(n_frames):
            x, y = x0 + dx * step * k, y0 + dy * step * k
            frame = Image.new("RGB", (SIZE, SIZE), background)
            draw_shape(ImageDraw.Draw(frame), shape, (x, y, x + SIDE, y + SIDE), COLORS[colour])
            frames.append(png_bytes(frame))
        meta = {"colour": colour, "shape": shape, "direction": direction, "frame_times": times}
        question = f"In which direction does the {colour} {shape} move: left, right, up or down?"
        answer, answer_type = direction, "text"
        reasoning = f"Across the {n_frames} frames the {colour} {shape} keeps moving {direction}."
    timing = ", ".join(_fmt(t) for t in times)
    return make_row(
        row_id=f"video-{task}-{split}-{i:06d}", domain="video", task=task, split=split, images=frames,
        frame_times=times, question=f"The frames are at {timing} seconds. {question}", answer=answer,
        answer_type=answer_type, difficulty=0.4 if task == "appear" else 0.3, source="generated:video",
        caption=alt_text(rng, factual_caption(task, meta), GENERIC), reasoning=reasoning, meta=meta)


def rows(rng: np.random.Generator, n: int, split: str) -> list[dict]:
    return [_row(rng, i, split) for i in range(n)]
