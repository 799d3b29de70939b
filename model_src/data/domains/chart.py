"""chart: bar and line charts of a yearly series with axis labels.

Questions: the maximum value, the difference between two years (numbers, 2.5% tolerance) and the
year of the peak (exact). Peak-year questions are also emitted as multiple choice.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from model_src.data.domains.common import alt_text, choice_variant, font, make_row, pick, png_bytes

GENERIC = ["chart", "graph of data", "statistics figure", "a plot"]
SERIES = [("Sales", "units"), ("Revenue", "k$"), ("Visitors", "k"), ("Rainfall", "mm")]
W, H = 168, 112


def factual_caption(task: str, meta: dict) -> str:
    points = ", ".join(f"{y}: {v}" for y, v in zip(meta["years"], meta["values"]))
    return f"A {meta['kind']} chart of {meta['title']} ({meta['unit']}) by year. {points}."


def _render(kind: str, title: str, years: list[int], values: list[int], rng) -> Image.Image:
    image = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, bottom, top, right = 24, H - 16, 14, W - 6
    draw.text((left, 1), title, fill=(0, 0, 0), font=font(10))
    draw.line((left, top, left, bottom, right, bottom), fill=(0, 0, 0), width=1)
    vmax = 100
    for tick in (0, 50, 100):
        y = bottom - (bottom - top) * tick / vmax
        draw.text((2, y - 5), str(tick), fill=(60, 60, 60), font=font(8))
    step = (right - left) / len(years)
    colour = tuple(int(v) for v in rng.integers(20, 200, size=3))
    points = []
    for k, (year, value) in enumerate(zip(years, values)):
        x = left + step * (k + 0.5)
        y = bottom - (bottom - top) * value / vmax
        if kind == "bar":
            draw.rectangle((x - step * 0.3, y, x + step * 0.3, bottom), fill=colour)
        points.append((x, y))
        draw.text((x - 9, bottom + 2), str(year)[2:] if len(years) > 6 else str(year), fill=(0, 0, 0), font=font(8))
    if kind == "line":
        draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    return image


def _chart(rng, i, split):
    kind = pick(rng, ["bar", "line"])
    title, unit = pick(rng, SERIES)
    start, count = int(rng.integers(1990, 2020)), int(rng.integers(4, 7))
    years = list(range(start, start + count))
    values = [int(v) for v in rng.choice(np.arange(5, 100, 5), size=count, replace=False)]
    image = png_bytes(_render(kind, title, years, values, rng))
    meta = {"kind": kind, "title": title, "unit": unit, "years": years, "values": values}
    caption = alt_text(rng, factual_caption("chart", meta), GENERIC)
    peak = years[int(np.argmax(values))]
    q = int(rng.integers(3))
    common = dict(domain="chart", split=split, images=[image], source=f"generated:chart:{kind}",
                  caption=caption, meta=meta)
    listing = ", ".join(f"{y} is {v}" for y, v in zip(years, values))
    if q == 0:
        row = make_row(row_id=f"chart-peak-{split}-{i:06d}", task="peak_year",
                       question=f"In which year is {title.lower()} highest?", answer=str(peak), answer_type="year",
                       difficulty=0.3, reasoning=f"Reading the chart: {listing}. The largest is {max(values)} in {peak}.",
                       **common)
        others = [str(y) for y in years if y != peak]
        return [row, choice_variant(row, str(peak), others, rng)]
    if q == 1:
        return [make_row(row_id=f"chart-max-{split}-{i:06d}", task="max_value",
                         question=f"What is the highest value of {title.lower()} in {unit}?", answer=str(max(values)),
                         answer_type="number", difficulty=0.3,
                         reasoning=f"Reading the chart: {listing}. The maximum is {max(values)}.", **common)]
    a, b = sorted(int(k) for k in rng.choice(count, size=2, replace=False))
    diff = values[b] - values[a]
    return [make_row(row_id=f"chart-diff-{split}-{i:06d}", task="difference",
                     question=f"By how much did {title.lower()} change from {years[a]} to {years[b]}?",
                     answer=str(diff), answer_type="number", difficulty=0.6,
                     reasoning=f"In {years[a]} it is {values[a]} and in {years[b]} it is {values[b]}. "
                               f"{values[b]} - {values[a]} = {diff}.", **common)]


def rows(rng: np.random.Generator, n: int, split: str) -> list[dict]:
    out: list[dict] = []
    i = 0
    while len(out) < n:
        out += _chart(rng, i, split)
        i += 1
    return out[:n]
