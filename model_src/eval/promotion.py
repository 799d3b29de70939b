"""The promotion gate: may a new model version replace the champion?

A new version becomes `champion` only if its mean accuracy beats the current champion's on the
same eval data and no domain's accuracy drops by more than `tolerance`; otherwise it stays
`candidate`, and the reason says why.

>>> decide_promotion({"accuracy_mean": 0.6, "accuracy/a": 0.6}, None, "h", None, 0.02)
(True, 'no champion yet')
>>> decide_promotion({"accuracy_mean": 0.5, "accuracy/a": 0.5}, {"accuracy_mean": 0.5, "accuracy/a": 0.5}, "h", "h", 0.02)
(False, 'mean accuracy 0.5000 does not beat the champion 0.5000')
"""

from __future__ import annotations


def decide_promotion(new: dict[str, float], champion: dict[str, float] | None, new_eval_data: str,
                     champion_eval_data: str | None, tolerance: float) -> tuple[bool, str]:
    if champion is None:
        return True, "no champion yet"
    if champion_eval_data != new_eval_data:
        return False, (f"the champion was evaluated on other data ({champion_eval_data}) than this version "
                       f"({new_eval_data}): not comparable")
    new_mean, champion_mean = new["accuracy_mean"], champion["accuracy_mean"]
    if new_mean <= champion_mean:
        return False, f"mean accuracy {new_mean:.4f} does not beat the champion {champion_mean:.4f}"
    drops = {k: champion[k] - new.get(k, 0.0) for k in champion if k.startswith("accuracy/")}
    worst = max(drops, key=drops.get, default=None)
    if worst is not None and drops[worst] > tolerance:
        return False, (f"{worst} drops by {drops[worst]:.4f} (champion {champion[worst]:.4f}, this version "
                       f"{new.get(worst, 0.0):.4f}), more than the tolerance {tolerance}")
    return True, f"mean accuracy {new_mean:.4f} beats the champion {champion_mean:.4f}, no domain drops > {tolerance}"
