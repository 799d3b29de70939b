"""Curriculum sampling and expansion: pure functions against hand-computed values."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from model_src.rl.curriculum import Curriculum, expansion_ratio, most_balanced, sampling_weight, tier_of


def test_weight_peaks_at_half_and_floors_at_the_extremes():
    assert sampling_weight(0.5, 0.1) == 1.0
    assert sampling_weight(0.0, 0.1) == sampling_weight(1.0, 0.1) == pytest.approx(0.1)
    assert sampling_weight(0.25, 0.1) == pytest.approx(0.1 + 0.9 * 0.75)


def test_tiers_and_expansion_ratio():
    thresholds = (0.8, 0.6, 0.4, 0.2)
    assert [tier_of(p, thresholds) for p in (1.0, 0.7, 0.5, 0.3, 0.0)] == [0, 1, 2, 3, 4]
    assert expansion_ratio(0.0, 4.0) == 1.0
    assert expansion_ratio(0.75, 4.0) == 4.0
    assert expansion_ratio(0.9, 4.0) == 4.0  # capped (raw 10)
    assert expansion_ratio(1.0, 4.0) == 4.0


def test_most_balanced_keeps_the_groups_with_the_largest_reward_spread():
    # right/wrong groups of 4 that are 100%, 50%, 0%, 25%, 75% right: the spread is sqrt(p (1 - p))
    spreads = [math.sqrt(p * (1 - p)) for p in (1.0, 0.5, 0.0, 0.25, 0.75)]
    assert most_balanced(spreads, keep=3) == [1, 3, 4]
    assert most_balanced([0.0, 0.3, 0.1], keep=1) == [1]  # graded rewards: spread, not mean, decides


def test_unsampled_prompts_take_their_tasks_online_pass_rate():
    rows = {f"chart{i}": "chart/value" for i in range(5)} | {f"digit{i}": "digits/read" for i in range(5)}
    cur = Curriculum(pass_rates={i: 0.6 for i in rows}, alpha=0.5, task_of=rows)
    cur.update({"chart0": 0.0, "chart1": 0.0, "digit0": 0.5})
    # the sampled ones move from their prior; the task's EMA starts at its first observation
    assert cur.pass_rates["chart0"] == cur.pass_rates["chart1"] == pytest.approx(0.3)
    assert cur.task_rates == {"chart/value": 0.0, "digits/read": 0.5}
    # never-sampled chart prompts are now as hard as their task, and drawn at the floor weight
    assert cur.estimate("chart4") == 0.0 and cur.estimate("digit4") == 0.5
    assert cur.weights(["chart4", "digit4"]) == pytest.approx([0.1, 1.0])
    assert cur.tier_histogram() == [0, 0, 5, 2, 3]  # digits at 0.5 and 0.55, the rest: chart 0.3 and 0.0
    # a prompt's own observation wins over its task's once it was sampled
    cur.update({"chart4": 1.0})
    assert cur.estimate("chart4") == pytest.approx(0.5) and cur.estimate("chart3") == pytest.approx(0.5)


def test_not_valid_rate_counts_groups_without_spread():
    cur = Curriculum(pass_rates={"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5}, max_ratio=8.0)
    # graded rewards: a group averaging 0.3 may still be all alike (no advantage) or spread out
    metrics = cur.update({"a": 0.3, "b": 0.3, "c": 0.0, "d": 1.0}, valid={"a": True, "b": False, "c": False, "d": False})
    assert metrics["not_valid_rate"] == 0.75 and metrics["expansion_ratio"] == 4.0


def test_mid_difficulty_prompts_are_drawn_more_often():
    rates = {f"easy{i}": 1.0 for i in range(10)} | {f"mid{i}": 0.5 for i in range(10)} | {f"hard{i}": 0.0 for i in range(10)}
    cur = Curriculum(pass_rates=dict(rates), floor=0.1)
    rng = random.Random(0)
    counts = Counter(p[:3] for _ in range(300) for p in cur.sample(sorted(rates), 5, rng))
    assert counts["mid"] > 3 * counts["eas"] and counts["mid"] > 3 * counts["har"]
    uniform = Curriculum(pass_rates=dict(rates), uniform=True)
    counts = Counter(p[:3] for _ in range(300) for p in uniform.sample(sorted(rates), 5, rng))
    assert max(counts.values()) < 1.3 * min(counts.values())


def test_update_moves_pass_rates_and_the_ratio_ema():
    cur = Curriculum(pass_rates={"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5}, alpha=0.5, ema_decay=0.8, max_ratio=4.0)
    metrics = cur.update({"a": 1.0, "b": 0.0, "c": 0.5, "d": 0.25})
    assert cur.pass_rates == {"a": 0.75, "b": 0.25, "c": 0.5, "d": 0.375}
    assert metrics["not_valid_rate"] == 0.5
    assert metrics["expansion_ratio"] == 2.0
    assert cur.ratio_ema == pytest.approx(0.8 * 1.0 + 0.2 * 2.0)
    assert cur.num_to_sample(8, 100) == 10  # ceil(8 * 1.2)
    assert sum(cur.tier_histogram()) == 4


def test_state_dict_round_trip_continues_identically():
    a = Curriculum(pass_rates={"a": 0.5, "b": 0.9})
    a.update({"a": 1.0})
    b = Curriculum(pass_rates={"a": 0.0, "b": 0.0})
    b.load_state_dict(a.state_dict())
    ra, rb = random.Random(3), random.Random(3)
    assert a.sample(["a", "b"], 1, ra) == b.sample(["a", "b"], 1, rb)
    assert a.update({"b": 0.0}) == b.update({"b": 0.0})


def test_curation_balance_weights_scale_sampling_in_both_modes():
    rates = {"a": 0.5, "b": 0.5}
    for uniform in (False, True):
        cur = Curriculum(pass_rates=dict(rates), uniform=uniform, data_weight={"a": 3.0, "b": 1.0})
        rng = random.Random(1)
        counts = Counter(p for _ in range(4000) for p in cur.sample(["a", "b"], 1, rng))
        assert 2.6 < counts["a"] / counts["b"] < 3.4, (uniform, counts)
