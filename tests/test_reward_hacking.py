"""Properties a policy could otherwise exploit: it must not raise its reward by hedging across
answers, listing values, shrinking or padding its answer, or by giving fewer or more boxes.

Each property is checked on generated answers (hypothesis), in every domain where an answer is
one option or one value, so RL cannot find the hole a hand-picked example misses."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from model_src.rewards import score


def wrap(answer: str) -> str:
    return f"<think>reasoning</think><answer><|begin_of_box|>{answer}<|end_of_box|></answer>"


def reward(domain: str, answer: str, reference: str) -> float:
    return score(domain, wrap(answer), reference).reward


VALUE_DOMAINS = ("math", "stem", "counting", "digits", "chart")
HEDGES = ("{a} or {b}", "{b} or {a}", "{a} \\text{{ or }} {b}", "{a}, {b}", "{b}, {a}", "{a} and {b}",
          "{a}; {b}", "either {a} or {b}", "{a} and/or {b}", "{a}或{b}", "\\{{{a}, {b}\\}}", "**{a}** or **{b}**")
values = st.integers(min_value=0, max_value=999)
letters = st.sampled_from("ABCDEFGH")
SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(domain=st.sampled_from(VALUE_DOMAINS), right=values, wrong=values, template=st.sampled_from(HEDGES))
def test_hedging_or_listing_the_right_value_with_a_wrong_one_scores_zero(domain, right, wrong, template):
    assume(wrong != right and not (domain == "chart" and abs(wrong - right) <= 0.025 * max(right, 1)))
    assert reward(domain, str(right), str(right)) == 1.0
    assert reward(domain, template.format(a=right, b=wrong), str(right)) == 0.0


CHOICE_HEDGES = ("({a}) or ({b})", "{a} or {b}", "{a}/{b}", "The answer is {a} or {b}", "{a} or {b} is correct",
                 "**{a}** or **{b}**", "({a}) and ({b})", "Answer: {a}, {b}", "[{a}] [{b}]", "{a} & {b}",
                 "Option {a} or option {b}", "{a}. or {b}.")
CHOICE_FORMS = ("{a}", "({a})", "{a}.", "[{a}]", "**{a}**", "The answer is {a}", "The answer is ({a}).",
                "Option {a} is correct", "**Answer: {a}**", "{a}. the red car", "I think the answer is {a}.")


@SETTINGS
@given(right=letters, wrong=letters, hedge=st.sampled_from(CHOICE_HEDGES), form=st.sampled_from(CHOICE_FORMS))
def test_a_choice_is_one_option_and_a_hedge_across_options_scores_zero(right, wrong, hedge, form):
    assume(wrong != right)
    assert reward("choice", form.format(a=right), right) == 1.0
    assert reward("choice", form.format(a=wrong), right) == 0.0
    assert reward("choice", hedge.format(a=right, b=wrong), right) == 0.0


@SETTINGS
@given(mantissa=st.integers(min_value=11, max_value=99), exponent=st.integers(min_value=-40, max_value=-4),
       shift=st.sampled_from([-2, -1, 1, 2]))
def test_a_small_magnitude_off_by_a_power_of_ten_scores_zero(mantissa, exponent, shift):
    """Tolerance is relative: 1.6e-19 and 1.6e-18 differ by 10x, however close both are to zero."""
    ref = f"{mantissa / 10}\\times 10^{{{exponent}}}"
    assert reward("math", f"{mantissa / 10}e{exponent}", ref) == 1.0
    assert reward("math", f"{mantissa / 10}e{exponent + shift}", ref) == 0.0


@SETTINGS
@given(base=st.integers(min_value=2, max_value=9), power=st.integers(min_value=30, max_value=120))
def test_large_and_tiny_exact_values_compare_exactly(base, power):
    assert reward("math", f"\\frac{{1}}{{{base}^{{{power}}}}}", f"{base}^{{-{power}}}") == 1.0
    assert reward("math", f"\\frac{{1}}{{{base}^{{{power + 1}}}}}", f"{base}^{{-{power}}}") == 0.0
    assert reward("math", f"{base}^{{{power}}}+1", f"{base ** power}") == 0.0


@SETTINGS
@given(right=values, wrong=values, pad=st.sampled_from(["{w} ({r})", "{w}, not {r}", "{w} \\text{{ (or {r})}}",
                                                          "{w} \\quad {r}", "{w}{r}", "{w} = {r}"]))
def test_padding_a_wrong_value_with_the_right_one_scores_zero(right, wrong, pad):
    assume(wrong != right and str(right) not in str(wrong))
    assume(not (pad == "{w}{r}" and wrong == 0))  # `01` is the number 1
    for domain in ("math", "counting"):
        assert reward(domain, pad.format(w=wrong, r=right), str(right)) == 0.0, domain


boxes = st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=5, unique=True).map(
    lambda cells: [[100 * x, 100 * y, 100 * x + 90, 100 * y + 90] for x, y in cells])  # disjoint grid cells


def box_text(found: list[list[int]]) -> str:
    return "[" + ",".join("[" + ",".join(map(str, b)) + "]" for b in found) + "]"


@SETTINGS
@given(reference=boxes, data=st.data())
def test_fewer_boxes_or_more_boxes_never_beat_the_right_boxes(reference, data):
    """Grounding is an F1: a missed object costs as much as a spare box."""
    ref = box_text(reference)
    assert reward("grounding", ref, ref) == 1.0
    if len(reference) > 1:
        kept = data.draw(st.integers(1, len(reference) - 1))
        assert reward("grounding", box_text(reference[:kept]), ref) < 1.0
    spare = [[950, 950, 999, 999]]
    assert reward("grounding", box_text(reference + spare), ref) < 1.0
    assert reward("grounding", box_text(reference + reference), ref) < 1.0  # each box matches once
    everywhere = [[100 * x, 100 * y, 100 * x + 90, 100 * y + 90] for x in range(9) for y in range(4)]
    assert reward("grounding", box_text(everywhere), ref) < 0.5  # spraying boxes over the image


@SETTINGS
@given(text=st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=3, max_size=40),
       junk=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=40))
def test_ocr_padding_or_cutting_the_text_lowers_its_reward(text, junk):
    assume(text.strip())
    assert reward("ocr", text, text) == 1.0
    assert reward("ocr", text + junk, text) < 1.0
    if len(text.replace(" ", "")) > 1:
        assert reward("ocr", text.replace(" ", "")[:-1], text) < 1.0


@SETTINGS
@given(count=st.integers(min_value=0, max_value=60), other=st.integers(min_value=0, max_value=60),
       noun=st.sampled_from(["apples", "cars", "people"]))
def test_a_count_stated_once_counts_and_two_counts_do_not(count, other, noun):
    from model_src.rewards.forms import number_word  # noqa: F401 - the words below are the reader's own

    assume(other != count)
    assert reward("counting", f"There are {count} {noun}.", str(count)) == 1.0
    assert reward("counting", f"There are {count} or {other} {noun}.", str(count)) == 0.0
    assert reward("counting", f"{count}-{other}", str(count)) == 0.0
