"""The promotion gate on hand-made metric tables."""

from model_src.eval.promotion import decide_promotion

CHAMPION = {"accuracy_mean": 0.50, "accuracy/digits": 0.80, "accuracy/stem": 0.20}


def test_better_mean_without_domain_drops_is_promoted():
    new = {"accuracy_mean": 0.55, "accuracy/digits": 0.79, "accuracy/stem": 0.31}
    assert decide_promotion(new, CHAMPION, "h", "h", 0.02)[0]


def test_better_mean_with_a_domain_drop_beyond_tolerance_stays_candidate():
    new = {"accuracy_mean": 0.60, "accuracy/digits": 0.70, "accuracy/stem": 0.50}
    promote, reason = decide_promotion(new, CHAMPION, "h", "h", 0.02)
    assert not promote and "accuracy/digits drops by 0.1000" in reason


def test_equal_or_worse_mean_and_other_eval_data_stay_candidate():
    assert not decide_promotion(dict(CHAMPION), CHAMPION, "h", "h", 0.02)[0]
    promote, reason = decide_promotion({**CHAMPION, "accuracy_mean": 0.9}, CHAMPION, "new", "old", 0.02)
    assert not promote and "not comparable" in reason
