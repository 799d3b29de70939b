"""Known strings get known rewards; malformed or gamed responses score 0."""

from __future__ import annotations

import pytest

from model_src.rewards import score

GOOD = "<think>3 plus 4 is 7.</think><answer><|begin_of_box|>7<|end_of_box|></answer>"


def test_correct_answer_scores_one_with_parts():
    result = score("stem", GOOD, "7")
    assert result.reward == 1.0 and result.format_ok
    assert result.parts == {"format": 1.0, "accuracy": 1.0}


def test_wrong_answer_is_well_formed_but_scores_zero():
    result = score("stem", GOOD.replace(">7<", ">8<"), "7")
    assert result.reward == 0.0 and result.format_ok and result.reason == "mismatch"


def test_normalisation_of_case_whitespace_and_symbols():
    assert score("stem", GOOD.replace(">7<", "> 45 % <"), "45%").reward == 1.0
    assert score("stem", GOOD.replace(">7<", "> 45 % <"), "45").reward == 0.0  # 45% is 0.45, not 45
    assert score("digits", GOOD.replace(">7<", ">Seven<"), "seven").reward == 1.0


@pytest.mark.parametrize(("response", "reason"), [
    ("7", "format:think_tags"),
    ("<think>x</think><answer>7</answer>", "format:box_count"),
    ("<think>x</think><answer><|begin_of_box|>7<|end_of_box|><|begin_of_box|>7<|end_of_box|></answer>", "format:box_count"),
    ("<think>x</think><|begin_of_box|>7<|end_of_box|><answer>so</answer>", "format:box_outside_answer"),
    ("<think>x</think>junk<answer><|begin_of_box|>7<|end_of_box|></answer>", "format:text_between_think_and_answer"),
    ("<think>x<answer><|begin_of_box|>7<|end_of_box|></answer></think>", "format:layout"),
    ("<think>x</think><answer><|begin_of_box|>\\boxed{7}<|end_of_box|></answer>", "format:latex_boxed"),
    ("<think>" + "a" * 40000 + "</think><answer><|begin_of_box|>7<|end_of_box|></answer>", "format:too_long"),
])
def test_malformed_responses_score_zero_with_a_reason(response, reason):
    result = score("stem", response, "7")
    assert result.reward == 0.0 and not result.format_ok
    assert result.reason == reason


def test_reward_hacking_probe_scores_zero():
    hack = "<think>x</think><answer><|begin_of_box|>a number between 0 and 10<|end_of_box|></answer>"
    assert score("stem", hack, "7").reward == 0.0


def test_never_raises_on_odd_input():
    for response in ["", "\x00\xff", "<think>" * 1000, None, 123]:
        assert score("stem", response, "7").reward == 0.0  # type: ignore[arg-type]
