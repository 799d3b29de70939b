"""stem: rendered arithmetic, multi-step word problems and geometry of drawn figures.

Difficulty is the number of reasoning steps (scaled to 0-1). Geometry questions are also emitted
as multiple choice.
"""

from __future__ import annotations


import numpy as np
from PIL import Image, ImageDraw

from model_src.data.domains.common import (alt_text, choice_variant, dark_colour, font, light_colour, make_row,
                                           pick, png_bytes)

GENERIC = ["a math problem", "homework", "worksheet scan", "math"]
OPS = {"+": ("plus", lambda a, b: a + b), "-": ("minus", lambda a, b: a - b), "x": ("times", lambda a, b: a * b)}


def factual_caption(task: str, meta: dict) -> str:
    if task == "arithmetic":
        return f"The image shows the expression {meta['expression']}."
    if task == "word_problem":
        return f"A word problem: {meta['text']}"
    if task.startswith("geometry"):
        labels = ", ".join(f"{k} {v}" for k, v in meta["labels"].items())
        return f"A drawing of a {meta['figure']} labelled {labels}."
    raise KeyError(task)


def _arithmetic(rng, i, split):
    sym = pick(rng, list(OPS))
    word, fn = OPS[sym]
    hi = 10 if sym == "x" else 50
    a, b = int(rng.integers(0, hi)), int(rng.integers(0, hi))
    if sym == "-" and b > a:
        a, b = b, a
    result = fn(a, b)
    expression = f"{a} {sym} {b}"
    image = Image.new("RGB", (112, 56), light_colour(rng))
    ImageDraw.Draw(image).text((8, 14), expression, fill=dark_colour(rng), font=font(22))
    meta = {"expression": expression, "a": a, "b": b, "op": sym}
    return make_row(
        row_id=f"stem-arith-{split}-{i:06d}", domain="stem", task="arithmetic", split=split,
        images=[png_bytes(image)], question="Compute the result of the expression in the image.",
        answer=str(result), answer_type="integer", difficulty=0.2 if sym != "x" else 0.4,
        source="generated:arithmetic", caption=alt_text(rng, factual_caption("arithmetic", meta), GENERIC),
        reasoning=f"The image shows {expression}. {a} {word} {b} is {result}.", meta=meta)


def _word_problem(rng, i, split):
    name, item = pick(rng, ["Ana", "Ben", "Chen", "Dara"]), pick(rng, ["apples", "pens", "coins", "books"])
    boxes, per_box = int(rng.integers(2, 7)), int(rng.integers(2, 9))
    steps = int(rng.integers(1, 4))
    total = boxes * per_box
    text = f"{name} has {boxes} boxes with {per_box} {item} in each."
    reasoning = f"{boxes} boxes of {per_box} is {boxes} x {per_box} = {total} {item}."
    answer = total
    if steps >= 2:
        given = int(rng.integers(1, total))
        answer = total - given
        text += f" {name} gives away {given}."
        reasoning += f" After giving away {given}: {total} - {given} = {answer}."
    if steps >= 3:
        found = int(rng.integers(1, 20))
        text += f" Then {name} finds {found} more."
        reasoning += f" Finding {found} more: {answer} + {found} = {answer + found}."
        answer += found
    text += f" How many {item} does {name} have now?"
    image = Image.new("RGB", (224, 84), light_colour(rng))
    draw = ImageDraw.Draw(image)
    words, line, y = text.split(), "", 4
    for word in words:  # greedy wrap at ~36 characters
        if len(line) + len(word) > 36:
            draw.text((4, y), line, fill=dark_colour(rng), font=font(10))
            line, y = "", y + 13
        line = f"{line} {word}".strip()
    draw.text((4, y), line, fill=(0, 0, 0), font=font(10))
    meta = {"text": text, "steps": steps}
    return make_row(
        row_id=f"stem-word-{split}-{i:06d}", domain="stem", task="word_problem", split=split,
        images=[png_bytes(image)], question="Solve the word problem in the image.", answer=str(answer),
        answer_type="integer", difficulty=steps / 4, source="generated:word_problem",
        caption=alt_text(rng, factual_caption("word_problem", meta), GENERIC), reasoning=reasoning, meta=meta)


def _geometry(rng, i, split):
    kind = pick(rng, ["rectangle_area", "rectangle_perimeter", "right_triangle_hypotenuse", "triangle_angle"])
    image = Image.new("RGB", (112, 112), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    ink = dark_colour(rng)
    small = font(11)
    if kind.startswith("rectangle"):
        w, h = int(rng.integers(2, 13)), int(rng.integers(2, 13))
        draw.rectangle((20, 30, 92, 80), outline=ink, width=2)
        draw.text((48, 16), f"{w} cm", fill=ink, font=small)
        draw.text((94, 48), f"{h}", fill=ink, font=small)
        labels, figure = {"width": f"{w} cm", "height": f"{h} cm"}, "rectangle"
        if kind == "rectangle_area":
            answer, question = w * h, "What is the area of the rectangle in square centimetres?"
            reasoning, steps = f"Area = width x height = {w} x {h} = {w * h}.", 1
        else:
            answer, question = 2 * (w + h), "What is the perimeter of the rectangle in centimetres?"
            reasoning, steps = f"Perimeter = 2 x ({w} + {h}) = 2 x {w + h} = {2 * (w + h)}.", 2
    elif kind == "right_triangle_hypotenuse":
        k = int(rng.integers(1, 4))
        a, b, c = pick(rng, [(3, 4, 5), (5, 12, 13), (8, 6, 10)])
        a, b, c = a * k, b * k, c * k
        draw.polygon([(20, 90), (92, 90), (20, 20)], outline=ink, width=2)
        draw.rectangle((20, 82, 28, 90), outline=ink)
        draw.text((50, 94), f"{a}", fill=ink, font=small)
        draw.text((4, 50), f"{b}", fill=ink, font=small)
        labels, figure = {"base": str(a), "height": str(b)}, "right triangle"
        answer, question, steps = c, "What is the length of the hypotenuse of the right triangle?", 2
        reasoning = f"By Pythagoras, c = sqrt({a}^2 + {b}^2) = sqrt({a * a + b * b}) = {c}."
    else:
        x, y = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        draw.polygon([(15, 95), (97, 95), (50, 15)], outline=ink, width=2)
        draw.text((22, 80), f"{x}°", fill=ink, font=small)
        draw.text((72, 80), f"{y}°", fill=ink, font=small)
        labels, figure = {"angle A": f"{x}°", "angle B": f"{y}°"}, "triangle"
        answer, question, steps = 180 - x - y, "What is the third angle of the triangle in degrees?", 2
        reasoning = f"Angles sum to 180°, so 180 - {x} - {y} = {180 - x - y}."
    meta = {"figure": figure, "labels": labels, "kind": kind}
    row = make_row(
        row_id=f"stem-geom-{split}-{i:06d}", domain="stem", task="geometry", split=split,
        images=[png_bytes(image)], question=question, answer=str(answer), answer_type="number",
        difficulty=steps / 4 + 0.1, source=f"generated:geometry:{kind}",
        caption=alt_text(rng, factual_caption("geometry", meta), GENERIC), reasoning=reasoning, meta=meta)
    offsets = rng.choice([-10, -5, -2, -1, 1, 2, 3, 5, 10], size=3, replace=False)
    return [row, choice_variant(row, str(answer), [str(answer + int(o)) for o in offsets], rng)]


def rows(rng: np.random.Generator, n: int, split: str) -> list[dict]:
    out = [_arithmetic(rng, i, split) for i in range(n // 2)]
    out += [_word_problem(rng, i, split) for i in range(n // 4)]
    for i in range(n - len(out) - n // 8):
        geometry, choice = _geometry(rng, i, split)
        out += [geometry, choice] if i % 2 == 0 else [geometry]
    return out


