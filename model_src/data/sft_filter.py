"""SFT cleaning (docs/recipe.md section 3): rows whose long-CoT target would teach a broken format are
rejected before training, with a count per reason.

- `malformed_tags`: the target `<think>{reasoning}</think><answer>...</answer>` does not parse
  (the reasoning or answer carries its own think/answer tags, text between the blocks, ...);
- `several_boxes`: the answer already holds a box, so the target would have two;
- `repeated_blocks`: the reasoning is mostly long repeated blocks (`rewards.core.repetition`).
"""

from __future__ import annotations

from collections import Counter

from model_src.data.schema import format_response
from model_src.rewards.core import format_reason, repetition

REJECTION_REASONS = ("malformed_tags", "several_boxes", "repeated_blocks")


def sft_rejection(row: dict) -> str | None:
    """None for a clean SFT row, else one of REJECTION_REASONS.

    >>> sft_rejection({"reasoning": "2 + 3 = 5.", "answer": "5"}) is None
    True
    >>> sft_rejection({"reasoning": "2 + 3 = 5.", "answer": "<|begin_of_box|>5<|end_of_box|>"})
    'several_boxes'
    >>> sft_rejection({"reasoning": "</think> oops", "answer": "5"})
    'malformed_tags'
    """
    reason = format_reason(format_response(row["reasoning"], row["answer"]))
    if reason == "box_count":
        return "several_boxes"
    if reason != "ok":
        return "malformed_tags"
    if repetition(row["reasoning"]):
        return "repeated_blocks"
    return None


def filter_sft_rows(rows: list[dict]) -> tuple[list[dict], Counter]:
    """(clean rows in order, rejected count per reason)."""
    kept, rejected = [], Counter()
    for row in rows:
        reason = sft_rejection(row)
        if reason is None:
            kept.append(row)
        else:
            rejected[reason] += 1
    return kept, rejected
