"""gui: rendered app screens with labelled buttons and text fields; instruction -> action.

Actions are compact JSON: `{"action":"click","box":[...]}`, `{"action":"type","box":[...],"text":"..."}`
or `{"action":"scroll","direction":"down"}`; boxes normalised to 0-999.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageDraw

from model_src.data.domains.common import alt_text, box_text, font, make_row, norm_box, pick, png_bytes

GENERIC = ["screenshot", "app screen", "UI", "a form"]
BUTTONS = ["Submit", "Cancel", "Save", "Next", "Login", "Delete", "Search", "Help"]
FIELDS = ["Name", "Email", "City", "Password", "Phone", "Search"]
VALUES = ["alice", "bob@mail.com", "Paris", "hunter2", "555 0101", "weather"]
W, H = 168, 112


def action_text(action: dict) -> str:
    return json.dumps(action, separators=(",", ":"))


def factual_caption(task: str, meta: dict) -> str:
    buttons = ", ".join(f"{b['label']} at {box_text(b['box'])}" for b in meta["buttons"])
    fields = ", ".join(f"{f['label']} at {box_text(f['box'])}" for f in meta["fields"])
    return f"An app screen titled {meta['title']} with buttons {buttons} and fields {fields}."


def _screen(rng):
    image = Image.new("RGB", (W, H), (245, 245, 250))
    draw = ImageDraw.Draw(image)
    title = pick(rng, ["Sign up", "Settings", "Profile", "Checkout"])
    draw.rectangle((0, 0, W, 14), fill=tuple(int(v) for v in rng.integers(30, 120, size=3)))
    draw.text((4, 1), title, fill=(255, 255, 255), font=font(10))
    # positions and sizes jitter, so answers (boxes) vary from screen to screen
    fields = []
    labels = [FIELDS[int(k)] for k in rng.choice(len(FIELDS), size=int(rng.integers(1, 3)), replace=False)]
    field_x, field_w = int(rng.integers(48, 60)), int(rng.integers(70, 106))
    for row, label in enumerate(labels):
        y = int(rng.integers(18, 24)) + row * 25
        draw.text((4, y + 3), label, fill=(0, 0, 0), font=font(9))
        box = (field_x, y, min(W - 2, field_x + field_w), y + 16)
        draw.rectangle(box, fill=(255, 255, 255), outline=(120, 120, 120))
        fields.append({"label": label, "box": norm_box(box, W, H)})
    buttons = []
    names = [BUTTONS[int(k)] for k in rng.choice(len(BUTTONS), size=int(rng.integers(2, 4)), replace=False)]
    button_w, button_y = int(rng.integers(42, 50)), int(rng.integers(H - 30, H - 22))
    for col, label in enumerate(names):
        x = 2 + col * (button_w + 6) + int(rng.integers(0, 4))
        box = (x, button_y, x + button_w, button_y + 18)
        draw.rectangle(box, fill=tuple(int(v) for v in rng.integers(60, 200, size=3)))
        draw.text((box[0] + 4, box[1] + 3), label, fill=(255, 255, 255), font=font(9))
        buttons.append({"label": label, "box": norm_box(box, W, H)})
    return image, {"title": title, "buttons": buttons, "fields": fields}


def _row(rng, i, split):
    image, meta = _screen(rng)
    roll = rng.random()
    kind = "click" if roll < 0.5 else "type" if roll < 0.9 else "scroll"
    if kind == "click":
        button = pick(rng, meta["buttons"])
        instruction = f"Click the {button['label']} button."
        action = {"action": "click", "box": button["box"]}
        reasoning, difficulty = f"The {button['label']} button is at {box_text(button['box'])}.", 0.3
    elif kind == "type":
        field = pick(rng, meta["fields"])
        value = VALUES[FIELDS.index(field["label"])]
        instruction = f'Type "{value}" into the {field["label"]} field.'
        action = {"action": "type", "box": field["box"], "text": value}
        reasoning, difficulty = f"The {field['label']} field is at {box_text(field['box'])}; type {value}.", 0.5
    else:
        direction = pick(rng, ["up", "down"])
        instruction = f"Scroll {direction} to see more of the page."
        action = {"action": "scroll", "direction": direction}
        reasoning, difficulty = f"Scrolling {direction} reveals more of the page.", 0.1
    answer = action_text(action)
    return make_row(
        row_id=f"gui-{split}-{i:06d}", domain="gui", task=f"action_{kind}", split=split, images=[png_bytes(image)],
        question=f"{instruction} Answer with the action as JSON.", answer=answer, answer_type="action",
        difficulty=difficulty, source="generated:gui", caption=alt_text(rng, factual_caption("gui", meta), GENERIC),
        reasoning=f"{reasoning} The action is {answer}.", meta=meta)


def rows(rng: np.random.Generator, n: int, split: str) -> list[dict]:
    return [_row(rng, i, split) for i in range(n)]
