"""Format check, box extraction, normalisation and the `score` entry point.

Everything here is string slicing with bounded input: no regex backtracking on model output, no
eval, so every call finishes quickly on any input and never raises.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"
MAX_RESPONSE_CHARS = 32_768  # longer responses are judged malformed rather than parsed

_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, BOX_OPEN, BOX_CLOSE)


@dataclass(frozen=True)
class RewardResult:
    reward: float  # in [0, 1]
    format_ok: bool
    parts: dict[str, float] = field(default_factory=dict)
    reason: str = ""


def _check_format(response: str) -> tuple[str | None, str]:
    """Return (boxed content, 'ok') or (None, why the format is broken)."""
    if len(response) > MAX_RESPONSE_CHARS:
        return None, "too_long"
    counts = {tag: response.count(tag) for tag in _TAGS}
    if counts[THINK_OPEN] != 1 or counts[THINK_CLOSE] != 1:
        return None, "think_tags"
    if counts[ANSWER_OPEN] != 1 or counts[ANSWER_CLOSE] != 1:
        return None, "answer_tags"
    if counts[BOX_OPEN] != 1 or counts[BOX_CLOSE] != 1:
        return None, "box_count"
    stripped = response.strip()
    if not stripped.startswith(THINK_OPEN) or not stripped.endswith(ANSWER_CLOSE):
        return None, "layout"
    think_end = stripped.index(THINK_CLOSE)
    answer_start = stripped.index(ANSWER_OPEN)
    if answer_start < think_end:
        return None, "layout"
    answer = stripped[answer_start + len(ANSWER_OPEN):-len(ANSWER_CLOSE)]
    box_start, box_end = answer.find(BOX_OPEN), answer.find(BOX_CLOSE)
    if box_start < 0 or box_end < 0 or box_end < box_start:
        return None, "box_outside_answer"
    if stripped[think_end + len(THINK_CLOSE):answer_start].strip():
        return None, "text_between_think_and_answer"
    content = answer[box_start + len(BOX_OPEN):box_end]
    if "\\boxed" in content:
        return None, "latex_boxed"
    return content, "ok"


def format_reason(response: str) -> str:
    """`ok`, or why `response` breaks the answer format (`think_tags`, `box_count`, `layout`, ...).

    >>> format_reason("<think>t</think><answer><|begin_of_box|>1<|end_of_box|></answer>")
    'ok'
    >>> format_reason("<think>a<think>b</think><answer><|begin_of_box|>1<|end_of_box|></answer>")
    'think_tags'
    """
    return _check_format(response)[1]


def extract_box(response: str) -> str | None:
    """The content of the single box inside `<answer>`, or None when the format is broken.

    >>> extract_box("<think>t</think><answer>so <|begin_of_box|>42<|end_of_box|></answer>")
    '42'
    >>> extract_box("<think>t</think><answer><|begin_of_box|>1<|end_of_box|><|begin_of_box|>2<|end_of_box|></answer>") is None
    True
    """
    if not isinstance(response, str):
        return None
    content, _ = _check_format(response)
    return content


# LaTeX forms first, so `\\%` does not leave a stray backslash behind
_DROPPED_SYMBOLS = ("\\%", "^\\circ", "\\circ", "%", "°", "$", "degrees", "units")


_EMPHASIS = ("**", "__", "*", "_", "`")


def strip_emphasis(text: str) -> str:
    """The answer without Markdown emphasis or code marks around it: `**73**`, `*B*`, `` `x` ``.

    >>> strip_emphasis(" **73** "), strip_emphasis("__**B**__"), strip_emphasis("2*3*4"), strip_emphasis("**")
    ('73', 'B', '2*3*4', '**')
    """
    text = text.strip()
    for _ in range(4):  # nested marks, a few deep
        mark = next((m for m in _EMPHASIS if len(text) > 2 * len(m) and text.startswith(m) and text.endswith(m)), None)
        if mark is None:
            break
        text = text[len(mark):-len(mark)].strip()
    return text


def normalize_answer(text: str) -> str:
    """Case, whitespace, units and symbols that do not change an answer's meaning.

    >>> normalize_answer("  The  Answer ")
    'the answer'
    >>> normalize_answer("45 %")
    '45'
    >>> normalize_answer("90^\\circ")
    '90'
    """
    text = text.strip().lower()
    for symbol in _DROPPED_SYMBOLS:
        text = text.replace(symbol, "")
    return " ".join(text.split()).rstrip(".").strip()


def repetition(text: str, min_chars: int = 200, max_ratio: float = 0.2) -> float:
    """1.0 when `text` is mostly long repeated blocks (it compresses below `max_ratio`), else 0.0.

    >>> repetition("the same sentence again. " * 40)
    1.0
    >>> repetition("3 plus 4 is 7.")
    0.0
    """
    if len(text) < min_chars:
        return 0.0
    data = text[:MAX_RESPONSE_CHARS].encode("utf-8", "replace")
    return 1.0 if len(zlib.compress(data)) / len(data) < max_ratio else 0.0


def score(domain: str, response: str, reference: str, *, question: str | None = None,
          repetition_penalty: float = 0.0) -> RewardResult:
    """Reward of `response` (the full model output) against `reference` for `domain`.

    Format gates everything: a broken format scores 0. Then the domain's verifier compares the
    boxed answer with the reference. `repetition_penalty` (0 = off) scales the reward down by that
    share when the response is mostly repeated blocks. Never raises.
    """
    from model_src.rewards.verifiers import VERIFIERS

    zero = {"format": 0.0, "accuracy": 0.0}
    if not isinstance(response, str) or not isinstance(reference, str) or not isinstance(domain, str):
        return RewardResult(0.0, False, zero, "not_a_string")
    content, why = _check_format(response)
    if content is None:
        return RewardResult(0.0, False, zero, f"format:{why}")
    content = strip_emphasis(content)  # `**73**` is 73 in every domain
    verifier = VERIFIERS.get(domain)
    if verifier is None:
        return RewardResult(0.0, True, {"format": 1.0, "accuracy": 0.0}, f"unknown_domain:{domain}")
    try:
        accuracy, reason = verifier(content, reference)
    except Exception as exc:  # noqa: BLE001 - a verifier bug must not crash RL; it scores 0 and says why
        return RewardResult(0.0, True, {"format": 1.0, "accuracy": 0.0}, f"verifier_error:{type(exc).__name__}")
    parts = {"format": 1.0, "accuracy": float(accuracy)}
    reward = float(accuracy)
    if repetition_penalty > 0:
        parts["repetition"] = repetition(response)
        reward *= 1.0 - min(1.0, repetition_penalty) * parts["repetition"]
    return RewardResult(min(1.0, max(0.0, reward)), True, parts, reason)
