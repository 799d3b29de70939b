"""Rewards: one pure function scores RL rollouts and evaluation alike (docs/recipe.md section 5).

    >>> from model_src.rewards import score
    >>> r = score("stem", "<think>2+3</think><answer><|begin_of_box|>5<|end_of_box|></answer>", "5")
    >>> (r.reward, r.format_ok, r.reason)
    (1.0, True, 'match')
    >>> score("chart", "<think>t</think><answer><|begin_of_box|>2020<|end_of_box|></answer>", "2021").reward
    0.0
    >>> score("stem", "the answer is 5", "5").reward
    0.0

Only the single box inside `<answer>` is compared, by the domain's verifier
(`model_src.rewards.verifiers`: math, chart, ocr, counting, choice, grounding, gui, video, digits). A response that breaks the format scores 0,
whatever it says: format gates the reward (rewards that pay for format alone get gamed).
"""

from __future__ import annotations

from model_src.rewards.core import RewardResult, extract_box, normalize_answer, score

__all__ = ["RewardResult", "extract_box", "normalize_answer", "score"]
