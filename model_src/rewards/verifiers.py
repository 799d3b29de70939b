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
(0.666667, 'box_f1')
>>> verify_video("12.4s", "12")
(1.0, 'within_tolerance')
"""

from __future__ import annotations

import json
import math
import re

from model_src.rewards.core import normalize_answer
from model_src.rewards.forms import ascii_width, cjk_numeral_prefix, number_word, plain_latex, split_unit
from model_src.rewards.mathanswer import same
from model_src.rewards.mathexpr import to_number

MAX_CHARS = 512  # longer box contents are judged too long to be an answer
CHART_REL_TOL = 0.025
IOU_THRESHOLD = 0.5
VIDEO_TOL_S = 1.0
TRUE_WORDS, FALSE_WORDS = {"yes", "true", "correct", "y", "t"}, {"no", "false", "incorrect", "n", "f"}
_CURRENCY = "$€£¥₹"


_HEDGE = re.compile(r"\bor\b|或|\bnor\b", re.IGNORECASE)


def _numeric(text: str) -> float | None:
    """A number as a chart or count states it: `1,234`, `45%` (45), `€30`, `5 km`, `seven`."""
    text = plain_latex(text).strip(_CURRENCY + " ").rstrip(".")
    if _HEDGE.search(text):  # `10 or 12`, `10或12`: two numbers are no number
        return None
    value = number_word(text)
    if value is not None:
        return float(value)
    value = to_number(text.replace("%", ""))
    if value is None:
        number, unit = split_unit(text)
        value = to_number(number.strip(_CURRENCY + " ").replace("%", "")) if unit else None
    return value


def verify_exact(pred: str, ref: str) -> tuple[float, str]:
    return (1.0, "match") if normalize_answer(pred) == normalize_answer(ref) else (0.0, "mismatch")


def verify_math(pred: str, ref: str) -> tuple[float, str]:
    """Exact after normalisation, else the same answer by `mathanswer.same`: numeric or symbolic
    equivalence (relative tolerance 1e-6) of values, relations, tuples, intervals and sets, with
    LaTeX and Unicode forms, assignments and one-sided units allowed for."""
    if normalize_answer(pred) == normalize_answer(ref) and _is_percent(pred) == _is_percent(ref):
        return 1.0, "match"  # `64%` is not `64` (it is 0.64): the shortcut keeps the per cent sign's meaning
    if len(pred) > MAX_CHARS:
        return 0.0, "too_long"
    if _LETTER.match(ref.strip()):  # a multiple-choice question in a math set: `A. Blue` answers `A`
        return verify_choice(pred, ref)
    return (1.0, "equivalent") if same(pred, ref) else (0.0, "mismatch")


_LETTER = re.compile(r"^\(?[A-J]\)?$")


def verify_chart(pred: str, ref: str) -> tuple[float, str]:
    """Numbers within 2.5% relative; years (integers 1000-3000) exactly; yes/no equivalents; labels
    listed in any order (`Beijing and Tokyo`). A percentage answer means its value over 100
    (`45%` is 0.45, as GLM-V and ChartQA's relaxed accuracy read it); a percentage reference is
    answered by that fraction or by the bare number of per cent (`0.45` or `45` for `45%`)."""
    p, r = normalize_answer(pred), normalize_answer(ref)
    if (p == r or p.replace(" ", "") == r.replace(" ", "")) and _is_percent(pred) == _is_percent(ref):
        return 1.0, "match"
    for words in (TRUE_WORDS, FALSE_WORDS):
        if r in words:
            return (1.0, "match") if p in words else (0.0, "mismatch")
    labels_p, labels_r = _labels(p), _labels(r)
    if (len(labels_p) > 1 or len(labels_r) > 1) and not any(ch.isdigit() for ch in p + r):
        return (1.0, "match") if labels_p == labels_r else (0.0, "mismatch")
    pv, rv = _numeric(pred[:MAX_CHARS]), _numeric(ref)
    if pv is None or rv is None:
        return 0.0, "mismatch"
    if float(rv).is_integer() and 1000 <= rv <= 3000 and not _is_percent(ref):
        return (1.0, "match") if pv == rv and not _is_percent(pred) else (0.0, "year_mismatch")
    answer = pv / 100 if _is_percent(pred) else pv
    wanted = [rv / 100, rv] if _is_percent(ref) and not _is_percent(pred) else \
        [rv / 100 if _is_percent(ref) else rv]
    if any(math.isclose(answer, want, rel_tol=CHART_REL_TOL) for want in wanted):  # relative only
        return 1.0, "within_tolerance"
    return 0.0, "mismatch"


def _labels(text: str) -> frozenset[str]:
    """`beijing and tokyo`, `tokyo, beijing` -> the set of labels (one item for a single label)."""
    return frozenset(item.strip() for item in re.split(r",|;|&|\band\b", text) if item.strip())


def _is_percent(text: str) -> bool:
    return "%" in plain_latex(text[:MAX_CHARS])


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def text_similarity(pred: str, ref: str) -> float:
    """1 - edit distance / max length, ignoring whitespace and full-width forms (`２５９０` is `2590`,
    as OCRBench reads it); inputs cut to MAX_CHARS."""
    a, b = ("".join(ascii_width(text[:MAX_CHARS]).split())[:MAX_CHARS] for text in (pred, ref))
    if not a and not b:
        return 1.0
    return 1.0 - _edit_distance(a, b) / max(len(a), len(b))


def verify_ocr(pred: str, ref: str) -> tuple[float, str]:
    return round(text_similarity(pred, ref), 6), "edit_similarity"


def count_of(text: str) -> float | None:
    """The count an answer states: `7`, `seven`, `twenty-one`, `二十一`, `5 apples`, `三只猫`, `5个`."""
    text = plain_latex(text[:64]).strip().rstrip(".")
    if _HEDGE.search(text):  # `7 or 8`, `七或八`
        return None
    number, unit = split_unit(text)  # `5 apples`, `5个`; a unit holds no number (`0或1` is a hedge)
    for literal in (text, number if unit and not any(ch.isdigit() for ch in unit) else ""):
        value = _count_literal(literal)
        if value is not None:
            return value
    words = text.split()  # a number word then its noun: `seven apples`, but not `seven or eight`
    for n in range(min(len(words) - 1, 4), 0, -1):
        value = number_word(" ".join(words[:n]))
        if value is not None:
            rest = words[n:]
            if any(ch.isdigit() for ch in " ".join(rest)) or any(number_word(w) is not None for w in rest):
                return None
            return float(value)
    numeral = cjk_numeral_prefix(text)  # 三只猫: numeral, classifier, noun
    if numeral is not None:
        return float(numeral)
    # a sentence that states one number: `There are 12 cars.`; two numbers are no count
    numbers = _DIGITS.findall(text) + [w for w in re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower())
                                        if number_word(w) is not None]
    return _count_literal(numbers[0].replace(",", "")) if len(numbers) == 1 else None


def _count_literal(text: str) -> float | None:
    """A numeral (`12`, not arithmetic: `1-0` is a range, not 1) or a number word (`seven`)."""
    if _COUNT.fullmatch(text):
        return float(text)
    value = number_word(text)
    return None if value is None else float(value)


_DIGITS = re.compile(r"-?\d+(?:[.,]\d+)*")  # with its sign: `-3` is no count
_COUNT = re.compile(r"\d+(?:\.\d+)?")


def verify_counting(pred: str, ref: str) -> tuple[float, str]:
    pv, rv = count_of(pred), count_of(ref)
    if pv is None or rv is None or not float(pv).is_integer() or pv < 0:  # `6-8` reads as -2: no count
        return 0.0, "not_a_count"
    return (1.0, "match") if pv == rv else (0.0, "mismatch")


# a label, optionally in parentheses, then the end, or a separator and the option's text: `B`,
# `(B)`, `B.`, `B. 42`, `B: the red car`, `D) none`, `2`, `(2)`, `Option C`
_LABEL = re.compile(r"^(?:option|answer|choice)?\s*:?\s*\(?([a-z]|[1-9]\d?)\)?(?:$|[.:)]\s*\S|[.:]$)")
_LABEL_LIST = re.compile(r"^\(?(?:[a-z]|[1-9]\d?)\)?(?:\s*(?:,|;|and|&)\s*\(?(?:[a-z]|[1-9]\d?)\)?)+$")
_LETTER_RUN = re.compile(r"[A-J]{2,10}")  # `AC`: a multi-select written as one run of capitals


# a capital letter marked as an option in a sentence (VLMEvalKit infers the option the same way):
# after `answer`/`option`/`choice` (any case, `is` and `:` allowed) or 答案是/选, after `is`, in brackets, or
# before `.`, `:`, `)` or `is correct`, or joined to another by `or`, `and`, `/`, `,`, `&` (a
# hedge: `The answer is B or D`). An unmarked capital is a word: `A cat`, `I think`.
_MARKED = re.compile(r"(?i:\b(?:answer|option|choice)(?:\s+is)?)\s*:?\s*[(\[]?([A-Ja-j])[)\]]?(?![A-Za-z0-9])"
                     r"|\b(?:is|or|and|nor)\s+[(\[]?([A-J])[)\]]?(?![A-Za-z0-9])"
                     r"|(?:答案|选项|选|答え|正解|정답)\s*(?:是|为|は|은|는)?\s*[:：]?\s*[(（\[]?([A-Ja-j])(?![A-Za-z0-9])"
                     r"|(?i:\b(?:choose|chose|pick|select|go\s+with))\s+(?:(?i:option)\s+)?[(\[]?([A-J])(?![A-Za-z0-9])"
                     r"|^([A-J])(?=\s+(?:because|since|as)\b|\s+-\s)"
                     r"|[(\[]([A-J])[)\]]"
                     r"|[/,&]\s*([A-J])(?![A-Za-z0-9])"
                     r"|(?<![A-Za-z0-9])([A-J])(?=[.:)]|\s+is\s+(?:correct|right|the\s+answer)|\s+(?:or|and)\s|\s*[/,&])")


def marked_options(text: str) -> set[str]:
    """The option letters a sentence marks: `The answer is (B).` -> {b}; `(B) or (D)` -> {b, d}."""
    return {next(g for g in m.groups() if g).lower() for m in _MARKED.finditer(text.replace("*", ""))}


def choice_labels(text: str) -> frozenset[str] | None:
    """The option label(s) an answer picks: one (`B`, `(B)`, `\\text{B}`, `B. 42`, `2`, `The answer is B`,
    `[C]`) or, for multi-select, a list (`A, C`); None when it is not a choice or hedges across
    options (`(B) or (D)`). Letters are case-blind."""
    text = plain_latex(ascii_width(text[:MAX_CHARS])).replace("*", "").strip().strip("'\"`")
    lowered = text.lower()
    if _LABEL_LIST.match(lowered):
        return frozenset(label.strip("()") for label in re.split(r"\s*(?:,|;|and|&)\s*", lowered))
    if _LETTER_RUN.fullmatch(text) and len(set(text)) == len(text):
        return frozenset(text.lower())
    marked = marked_options(text)
    match = _LABEL.match(lowered)
    if match:  # `B. 42`, `B: the red car`: the option's own text may not name another option
        return frozenset([match.group(1)]) if marked <= {match.group(1)} else None
    return frozenset(marked) if len(marked) == 1 else None


def verify_choice(pred: str, ref: str) -> tuple[float, str]:
    p, r = choice_labels(pred), choice_labels(ref)
    if not p or not r:
        return 0.0, "not_an_option"
    return (1.0, "match") if p == r else (0.0, "mismatch")


def load_json(text: str):
    """`json.loads`, with leading zeros dropped from numbers outside strings (`[0050, 0100]` is
    `[50, 100]`: models write coordinates zero-padded and GLM-V strips the zeros). Raises ValueError."""
    out, in_string, escaped, i = [], False, False, 0
    while i < len(text):
        ch = text[i]
        if in_string:
            in_string = ch != '"' or escaped
            escaped = ch == "\\" and not escaped
        elif ch == '"':
            in_string = True
        elif ch.isdigit() and (i == 0 or not (text[i - 1].isdigit() or text[i - 1] == ".")):
            while text[i] == "0" and i + 1 < len(text) and text[i + 1].isdigit():
                i += 1  # the number's leading zeros
            ch = text[i]
        out.append(ch)
        i += 1
    return json.loads("".join(out))


_BOX_KEYS = ("bbox_2d", "bbox", "box_2d", "box")


def parse_boxes(text: str) -> list[list[int]] | None:
    """`[x1,y1,x2,y2]` or a list of them, integers 0-999 with x1<=x2, y1<=y2; else None."""
    if len(text) > MAX_CHARS:
        return None
    try:
        value = load_json(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list) and len(value) == 4 and all(isinstance(v, int) for v in value):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):  # Qwen2.5-VL's
        value = [next((v[k] for k in _BOX_KEYS if k in v), None) for v in value]   # [{"bbox_2d": [...]}]
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


def matched_pairs(predicted: list[list[int]], reference: list[list[int]]) -> int:
    """The most (prediction, reference) pairs at IoU >= 0.5 with each box in at most one pair: a
    maximum bipartite matching by augmenting paths (greedy by IoU can pair a box with the wrong
    neighbour and miss a match when boxes overlap). At most ~40 boxes fit in MAX_CHARS."""
    edges = [[j for j, r in enumerate(reference) if iou(p, r) >= IOU_THRESHOLD] for p in predicted]
    owner: dict[int, int] = {}  # reference index -> prediction index

    def augment(i: int, seen: set[int]) -> bool:
        for j in edges[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(predicted)))


def verify_grounding(pred: str, ref: str) -> tuple[float, str]:
    """F1 of the boxes: 2 * matches / (predicted + reference boxes), a match being a one-to-one pair
    at IoU >= 0.5. A missed object costs as much as a wrong box, so neither fewer boxes (one sure
    box for two objects: 0.67) nor more (a spare guess: 0.67) raises the reward; repeats match once."""
    predicted, reference = parse_boxes(pred), parse_boxes(ref)
    if predicted is None:
        return 0.0, "malformed_box"
    if reference is None:
        return 0.0, "bad_reference"
    matches = matched_pairs(predicted, reference)
    return round(2 * matches / (len(predicted) + len(reference)), 6), "box_f1"


_ACTION_KEYS = ("action", "action_type")  # thinkpipe's generators, GLM-V's agents


def _action_box(value, nested: bool) -> list[int] | None:
    """`box` is `[x1,y1,x2,y2]`; GLM-V's `box_2d` nests it, `[[x1,y1,x2,y2]]` (the first box counts)."""
    if nested:
        if not (isinstance(value, list) and value and isinstance(value[0], list)):
            return None
        value = value[0]
    boxes = parse_boxes(json.dumps(value)) if isinstance(value, list) else None
    return boxes[0] if boxes else None


def _double_quoted(text: str) -> str:
    """`{'action': 'click'}` (a Python dict, as models often write JSON) with JSON's quotes, when the
    text has no double quotes of its own to confuse."""
    return text.replace("'", '"') if '"' not in text else text


def verify_gui(pred: str, ref: str) -> tuple[float, str]:
    """GLM-V's GUI reward: the predicted action must have exactly the reference's keys (an extra or
    a missing key scores 0) and the same action type; then the reward is the product over the
    other keys of: the boxes' IoU for `box`/`box_2d`, text similarity for `text`, 1 or 0 for
    anything else (exact)."""
    try:
        p, r = load_json(_double_quoted(pred[:MAX_CHARS])), load_json(ref)
    except (ValueError, RecursionError):
        return 0.0, "malformed_action"
    if not isinstance(p, dict) or not isinstance(r, dict):
        return 0.0, "malformed_action"
    if set(p) != set(r):
        return 0.0, "unexpected_key" if set(p) - set(r) else "missing_key"
    reward = 1.0
    for key, want in r.items():
        got = p[key]
        if key in _ACTION_KEYS:
            if got != want:
                return 0.0, "action_mismatch"
        elif key in ("box", "box_2d"):
            got_box, want_box = _action_box(got, key == "box_2d"), _action_box(want, key == "box_2d")
            if got_box is None or want_box is None:
                return 0.0, "malformed_box"
            reward *= iou(got_box, want_box)
        elif key == "text":
            reward *= text_similarity(str(got), str(want)) if isinstance(got, str) else 0.0
        else:
            reward *= 1.0 if got == want else 0.0
    return round(reward, 6), "fields_product"


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
