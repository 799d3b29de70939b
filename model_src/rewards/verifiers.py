"""One verifier per domain: `verify_<domain>(pred, ref) -> (accuracy in [0, 1], reason)`.

`pred` is the content of the single box (already extracted and format-checked); `ref` is the
row's canonical answer. Every verifier bounds its input, so each call takes bounded time.

>>> verify_math("0.5", "\\\\frac{1}{2}")
(1.0, 'equivalent')
>>> verify_chart("102", "100")
(1.0, 'within_tolerance')
>>> verify_chart("2021", "2020")
(0.0, 'year_mismatch')
>>> verify_ocr("Hel1o world", "Hello world")[0]
0.9
>>> verify_counting("three", "3")
(1.0, 'match')
>>> verify_choice("(B)", "b")
(1.0, 'match')
>>> verify_grounding("[[0,0,100,100],[500,500,600,600]]", "[[0,0,100,100]]")
(0.5, 'iou_share')
>>> verify_video("12.4s", "12")
(1.0, 'within_tolerance')
"""

from __future__ import annotations

import json
import math
import re

from model_src.rewards.core import normalize_answer
from model_src.rewards.mathexpr import equivalent, to_number

MAX_CHARS = 512  # longer box contents are judged too long to be an answer
CHART_REL_TOL = 0.025
IOU_THRESHOLD = 0.5
VIDEO_TOL_S = 1.0
NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
TRUE_WORDS, FALSE_WORDS = {"yes", "true", "correct", "y"}, {"no", "false", "incorrect", "n"}


def _light(text: str) -> str:
    return text.strip().lower().replace("°", "").replace("$", "").rstrip(".")


def _numeric(text: str) -> float | None:
    text = normalize_answer(text)
    if text in NUMBER_WORDS:
        return float(NUMBER_WORDS[text])
    return to_number(text)


def verify_exact(pred: str, ref: str) -> tuple[float, str]:
    return (1.0, "match") if normalize_answer(pred) == normalize_answer(ref) else (0.0, "mismatch")


def verify_math(pred: str, ref: str) -> tuple[float, str]:
    """Exact after normalisation, else numeric/symbolic equivalence (relative tolerance 1e-6)."""
    if normalize_answer(pred) == normalize_answer(ref):
        return 1.0, "match"
    if len(pred) > MAX_CHARS:
        return 0.0, "too_long"
    # with '%' kept first (50% == 1/2), then with units and '%' dropped (45% == 45)
    if equivalent(_light(pred), _light(ref)) or equivalent(normalize_answer(pred), normalize_answer(ref)):
        return 1.0, "equivalent"
    return 0.0, "mismatch"


def verify_chart(pred: str, ref: str) -> tuple[float, str]:
    """Numbers within 2.5% relative; years (integers 1000-3000) exactly; yes/no equivalents."""
    p, r = normalize_answer(pred), normalize_answer(ref)
    if p == r:
        return 1.0, "match"
    for words in (TRUE_WORDS, FALSE_WORDS):
        if r in words:
            return (1.0, "match") if p in words else (0.0, "mismatch")
    pv, rv = _numeric(p), _numeric(r)
    if pv is None or rv is None:
        return 0.0, "mismatch"
    if float(rv).is_integer() and 1000 <= rv <= 3000:
        return (1.0, "match") if pv == rv else (0.0, "year_mismatch")
    if math.isclose(pv, rv, rel_tol=CHART_REL_TOL, abs_tol=1e-9):
        return 1.0, "within_tolerance"
    return 0.0, "mismatch"


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def text_similarity(pred: str, ref: str) -> float:
    """1 - edit distance / max length, ignoring whitespace; inputs cut to MAX_CHARS."""
    a, b = "".join(pred.split())[:MAX_CHARS], "".join(ref.split())[:MAX_CHARS]
    if not a and not b:
        return 1.0
    return 1.0 - _edit_distance(a, b) / max(len(a), len(b))


def verify_ocr(pred: str, ref: str) -> tuple[float, str]:
    return round(text_similarity(pred, ref), 6), "edit_similarity"


def verify_counting(pred: str, ref: str) -> tuple[float, str]:
    pv, rv = _numeric(pred), _numeric(ref)
    if pv is None or rv is None or not float(pv).is_integer():
        return 0.0, "not_a_count"
    return (1.0, "match") if pv == rv else (0.0, "mismatch")


_CHOICE = re.compile(r"^(?:option\s*)?\(?([a-z])\)?[.:]?$")


def verify_choice(pred: str, ref: str) -> tuple[float, str]:
    p, r = _CHOICE.match(normalize_answer(pred)[:32]), _CHOICE.match(normalize_answer(ref)[:32])
    if not p or not r:
        return 0.0, "not_an_option"
    return (1.0, "match") if p.group(1) == r.group(1) else (0.0, "mismatch")


def parse_boxes(text: str) -> list[list[int]] | None:
    """`[x1,y1,x2,y2]` or a list of them, integers 0-999 with x1<=x2, y1<=y2; else None."""
    if len(text) > MAX_CHARS:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list) and len(value) == 4 and all(isinstance(v, int) for v in value):
        value = [value]
    if not isinstance(value, list) or not value:
        return None
    boxes = []
    for box in value:
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 999 for v in box)
                or box[2] < box[0] or box[3] < box[1]):
            return None
        boxes.append(box)
    return boxes


def iou(a: list[int], b: list[int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float(a == b)


def verify_grounding(pred: str, ref: str) -> tuple[float, str]:
    """Share of predicted boxes whose IoU with some reference box is >= 0.5; each reference box
    matches at most one prediction, so repeating a box earns nothing."""
    predicted, reference = parse_boxes(pred), parse_boxes(ref)
    if predicted is None:
        return 0.0, "malformed_box"
    if reference is None:
        return 0.0, "bad_reference"
    unmatched = list(reference)
    hits = 0
    for box in predicted:
        best = max(unmatched, key=lambda r: iou(box, r), default=None)
        if best is not None and iou(box, best) >= IOU_THRESHOLD:
            hits += 1
            unmatched.remove(best)
    return hits / len(predicted), "iou_share"


def verify_gui(pred: str, ref: str) -> tuple[float, str]:
    """Action type must match; then per field: IoU >= 0.5 for `box`, text similarity for `text`,
    exact for anything else; the reward is the product over the reference's fields."""
    try:
        p, r = json.loads(pred[:MAX_CHARS]), json.loads(ref)
    except (ValueError, RecursionError):
        return 0.0, "malformed_action"
    if not isinstance(p, dict) or not isinstance(r, dict):
        return 0.0, "malformed_action"
    if p.get("action") != r.get("action"):
        return 0.0, "action_mismatch"
    reward = 1.0
    for key, want in r.items():
        if key == "action":
            continue
        got = p.get(key)
        if key == "box":
            boxes = parse_boxes(json.dumps(got)) if isinstance(got, list) else None
            reward *= 1.0 if boxes and iou(boxes[0], want) >= IOU_THRESHOLD else 0.0
        elif key == "text":
            reward *= text_similarity(str(got), str(want)) if isinstance(got, str) else 0.0
        else:
            reward *= 1.0 if got == want else 0.0
    return reward, "fields_product"


_TIME = re.compile(r"^(?:(\d+):)?(\d+(?:\.\d+)?)\s*(?:s|sec|secs|second|seconds)?$")


def parse_seconds(text: str) -> float | None:
    """`12`, `12.5s`, `12 seconds`, `1:05` -> seconds."""
    match = _TIME.match(normalize_answer(text)[:32])
    if not match:
        return None
    minutes = int(match.group(1)) if match.group(1) else 0
    return minutes * 60 + float(match.group(2))


def verify_video(pred: str, ref: str) -> tuple[float, str]:
    p, r = parse_seconds(pred), parse_seconds(ref)
    if p is None or r is None:
        return verify_exact(pred, ref)
    return (1.0, "within_tolerance") if abs(p - r) <= VIDEO_TOL_S else (0.0, "mismatch")


VERIFIERS = {
    "stem": verify_math,
    "math": verify_math,
    "chart": verify_chart,
    "ocr": verify_ocr,
    "counting": verify_counting,
    "choice": verify_choice,
    "grounding": verify_grounding,
    "gui": verify_gui,
    "video": verify_video,
    "digits": verify_counting,
    "vqa": verify_exact,
}
