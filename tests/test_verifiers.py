"""Each domain verifier on known answers, adversarial strings and reward-hacking probes."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_src.rewards import score
from model_src.rewards.mathexpr import equivalent


def wrap(answer: str, think: str = "reasoning") -> str:
    return f"<think>{think}</think><answer><|begin_of_box|>{answer}<|end_of_box|></answer>"


@pytest.mark.parametrize(("domain", "pred", "ref", "reward"), [
    ("math", "1/2", "0.5", 1.0),
    ("math", "\\frac{1}{2}", "50%", 1.0),
    ("math", "\\sqrt{2}", "1.41421356", 1.0),
    ("math", "1+x", "x+1", 1.0),
    ("math", "x^2+2x+1", "(x+1)^2", 1.0),
    ("math", "x^2+2x", "(x+1)^2", 0.0),
    ("math", "1,000", "1000", 1.0),
    ("math", "45°", "45", 1.0),
    ("math", "0.3333", "1/3", 0.0),  # 1e-6 relative tolerance, not 1e-4
    ("chart", "49.0", "50", 1.0),
    ("chart", "48", "50", 0.0),
    ("chart", "1999", "2000", 0.0),
    ("chart", "2000", "2000", 1.0),
    ("chart", "Yes", "true", 1.0),
    ("chart", "no", "true", 0.0),
    ("counting", "seven", "7", 1.0),
    ("counting", "7.5", "7", 0.0),
    ("digits", "3", "3", 1.0),
    ("choice", "C.", "c", 1.0),
    ("choice", "C and D", "c", 0.0),
    ("grounding", "[10,10,110,110]", "[[12,8,108,112]]", 1.0),
    ("grounding", "[[10,10,110,110],[10,10,110,110]]", "[[10,10,110,110]]", 2 / 3),  # F1: a repeat matches once
    ("grounding", "[10,10,1100,110]", "[[10,10,110,110]]", 0.0),
    ("grounding", "[110,10,10,110]", "[[10,10,110,110]]", 0.0),
    ("gui", '{"action": "click", "box": [10,10,50,50]}', '{"action": "click", "box": [10,10,50,50]}', 1.0),
    ("gui", '{"action": "scroll", "box": [10,10,50,50]}', '{"action": "click", "box": [10,10,50,50]}', 0.0),
    ("gui", '{"action": "type", "text": "hello"}', '{"action": "type", "text": "hello"}', 1.0),
    ("video", "1:05", "65", 1.0),
    ("video", "63 seconds", "65", 0.0),
])
def test_verifier_known_answers(domain, pred, ref, reward):
    assert score(domain, wrap(pred), ref).reward == pytest.approx(reward, abs=1e-6)


def test_ocr_is_graded_by_edit_distance_ignoring_whitespace():
    assert score("ocr", wrap("Hello  World"), "HelloWorld").reward == 1.0
    assert score("ocr", wrap("Hallo World"), "Hello World").reward == pytest.approx(0.9)


@pytest.mark.parametrize("hack", [
    wrap("a number between 0 and 10"),
    wrap("7") + wrap("7"),
    "<think>t</think><|begin_of_box|>7<|end_of_box|><answer>7</answer>",
    "<think>t</think><answer>\\boxed{7}</answer>",
    "<think>t</think><answer><|begin_of_box|><|begin_of_box|>7<|end_of_box|><|end_of_box|></answer>",
    wrap("7 or 8 or 9"),
    wrap("0,1,2,3,4,5,6,7,8,9"),
])
def test_reward_hacking_probes_score_zero(hack):
    for domain in ("math", "counting", "chart", "digits"):
        assert score(domain, hack, "7").reward == 0.0, (domain, hack)


def test_unknown_domain_scores_zero_and_says_so():
    result = score("astrology", wrap("7"), "7")
    assert result.reward == 0.0 and result.reason == "unknown_domain:astrology"


def test_repetition_penalty_is_a_separate_part_and_off_by_default():
    looping = wrap("7", think="I am not sure. " * 60)
    assert score("math", looping, "7").reward == 1.0
    penalised = score("math", looping, "7", repetition_penalty=1.0)
    assert penalised.reward == 0.0 and penalised.parts["repetition"] == 1.0


def test_math_reader_never_evaluates_python():
    assert not equivalent("__import__('os').system('true')", "0")
    assert not equivalent("9^9^9^9", "1")  # exponent bound, no hang
    assert score("math", wrap("(" * 500 + "1" + ")" * 500), "1").reward == 0.0


ADVERSARIAL = st.one_of(
    st.text(max_size=400),
    st.text(alphabet="0123456789+-*/^()[]{},.%\\fracsqrt x", max_size=300),
    st.builds(wrap, st.text(alphabet="0123456789+-*/^()[]{},.%\\fracsqrt x:s", max_size=300)),
)


@settings(max_examples=150, deadline=None)
@given(domain=st.sampled_from(["math", "chart", "ocr", "counting", "choice", "grounding", "gui", "video",
                               "digits"]),
       response=ADVERSARIAL, reference=st.sampled_from(["7", "2020", "[[1,2,3,4]]", '{"action": "click"}', "b", "x+1"]))
def test_score_is_bounded_fast_and_never_raises(domain, response, reference):
    started = time.monotonic()
    result = score(domain, response, reference)
    assert time.monotonic() - started < 1.0
    assert 0.0 <= result.reward <= 1.0
    assert result.format_ok or result.reward == 0.0
