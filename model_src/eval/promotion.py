"""The promotion gate: may a challenger replace the champion? Decided on paired per-prompt scores.

The evaluate stage scores the registry's `champion` and the new model (the challenger) on the same
prompts of this run's eval split, so the two are compared prompt by prompt, on today's data,
whatever data the champion was evaluated on when it was promoted. From the pairs:

- the gain is the mean over domains of each domain's mean paired difference (challenger minus
  champion; `accuracy_mean` weighs domains alike), with its paired standard error (`paired_gain`);
- a retraining on new data (the eval split differs from the champion's) promotes when it is
  *non-inferior*: the lower 95% bound of the gain, gain - 1.96 SE, is above `-margin`
  (`export.promotion_margin`): new data must not make the model worse, it need not beat noise;
- any other change (the same data: a config or code change) must be *superior*: the gain exceeds
  `min_se` paired SEs (`export.promotion_min_se`, default 2) and is positive;
- either way a domain blocks promotion when its drop exceeds `tolerance`
  (`export.promotion_tolerance`) *and* two of its own paired SEs: a drop noise can explain does not;
- with no champion the first model promotes; a champion of another model family (another
  architecture: `config.architectures` and `model_type`, see `model_family`) is not comparable and
  the challenger stays candidate. A new tokenizer is not a new family: every pretrain learns one.

Per domain, the figures carry each model's 95% Wilson interval of its mean reward (the mean of
rewards in [0, 1] read as a proportion of n prompts).

>>> champ = [{"id": str(i), "domain": "d", "reward": 0.0} for i in range(8)]
>>> better = [{"id": str(i), "domain": "d", "reward": float(i < 6)} for i in range(8)]
>>> decision = decide(compare(better, champ), new_data=False, margin=0.02, min_se=2.0, tolerance=0.02)
>>> decision.promoted, decision.rule
(True, 'superior')
>>> decide(None, new_data=True, margin=0.02, min_se=2.0, tolerance=0.02).reason
'no champion yet'
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

Z95 = 1.959964  # two-sided 95% normal quantile


def wilson(mean: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion `mean` over `n` trials.

    >>> [round(v, 3) for v in wilson(0.5, 100)]
    [0.404, 0.596]
    >>> wilson(1.0, 0)
    (0.0, 1.0)
    """
    if n <= 0:
        return 0.0, 1.0
    centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class DomainComparison:
    domain: str
    n: int
    champion: float
    challenger: float
    gain: float
    se: float

    def figures(self) -> dict[str, float]:
        lo_a, hi_a = wilson(self.challenger, self.n)
        lo_c, hi_c = wilson(self.champion, self.n)
        return {f"challenger/{self.domain}": self.challenger, f"champion/{self.domain}": self.champion,
                f"gain/{self.domain}": self.gain, f"gain_se/{self.domain}": self.se,
                f"challenger_ci_low/{self.domain}": lo_a, f"challenger_ci_high/{self.domain}": hi_a,
                f"champion_ci_low/{self.domain}": lo_c, f"champion_ci_high/{self.domain}": hi_c,
                f"prompts/{self.domain}": float(self.n)}


@dataclass(frozen=True)
class Comparison:
    """The challenger against the champion on the prompts both answered."""

    champion: float  # accuracy_mean over the paired prompts
    challenger: float
    gain: float
    se: float
    domains: tuple[DomainComparison, ...]

    @property
    def lower_bound(self) -> float:
        return self.gain - Z95 * self.se

    def figures(self) -> dict[str, float]:
        out = {"champion_mean": self.champion, "challenger_mean": self.challenger, "gain": self.gain,
               "gain_se": self.se, "gain_low95": self.lower_bound}
        for domain in self.domains:
            out.update(domain.figures())
        return out


def compare(challenger: list[dict], champion: list[dict]) -> Comparison:
    """Pair the two models' records (`id`, `domain`, `reward`) by prompt id; raises ValueError when
    they share no prompt."""
    from model_src.eval.evaluate import paired_gain, subset_accuracy

    ids = {r["id"] for r in challenger} & {r["id"] for r in champion}
    if not ids:
        raise ValueError("promotion: the champion and the challenger answered no prompt in common")
    overall = paired_gain(champion, challenger, "challenger")
    means = {name: subset_accuracy(records, ids, name)[f"accuracy_mean_{name}"]
             for name, records in (("champion", champion), ("challenger", challenger))}
    domains = []
    for domain in sorted({r["domain"] for r in challenger if r["id"] in ids}):
        mine = [r for r in challenger if r["domain"] == domain and r["id"] in ids]
        theirs = [r for r in champion if r["domain"] == domain and r["id"] in ids]
        gain = paired_gain(theirs, mine, domain)
        domains.append(DomainComparison(domain, len(mine), statistics.fmean(r["reward"] for r in theirs),
                                        statistics.fmean(r["reward"] for r in mine),
                                        gain[f"stage_gain_{domain}"], gain[f"stage_gain_se_{domain}"]))
    return Comparison(means["champion"], means["challenger"], overall["stage_gain_challenger"],
                      overall["stage_gain_se_challenger"], tuple(domains))


@dataclass(frozen=True)
class Decision:
    promoted: bool
    rule: str  # first | non-inferior | superior | not-comparable
    reason: str
    figures: dict[str, float] = field(default_factory=dict)


def decide(comparison: Comparison | None, *, new_data: bool, margin: float, min_se: float, tolerance: float,
           family_mismatch: str = "") -> Decision:
    """The gate (see the module's text). `comparison` None: there is no champion yet."""
    if family_mismatch:
        return Decision(False, "not-comparable", f"not comparable: {family_mismatch}")
    if comparison is None:
        return Decision(True, "first", "no champion yet")
    c = comparison
    figures = c.figures()
    said = (f"challenger {c.challenger:.4f} vs champion {c.champion:.4f} on the same "
            f"{sum(d.n for d in c.domains)} prompts: gain {c.gain:+.4f} (paired SE {c.se:.4f}, 95% lower bound "
            f"{c.lower_bound:+.4f})")
    blocking = [d for d in c.domains if -d.gain > tolerance and -d.gain > 2 * d.se]
    if new_data:
        rule = "non-inferior"
        passed = c.lower_bound > -margin
        verdict = (f"non-inferior on new data: lower bound above -{margin}" if passed else
                   f"not shown non-inferior on new data: lower bound {c.lower_bound:+.4f} is not above -{margin}")
    else:
        rule = "superior"
        passed = c.gain > 0 and c.gain > min_se * c.se
        verdict = (f"superior: gain above {min_se} paired SEs ({min_se * c.se:.4f})" if passed else
                   f"not shown superior: the gain is not above {min_se} paired SEs ({min_se * c.se:.4f})")
    if passed and blocking:
        worst = max(blocking, key=lambda d: -d.gain)
        return Decision(False, rule, f"{said}; {verdict}, but {worst.domain} drops by {-worst.gain:.4f} "
                                     f"(SE {worst.se:.4f}), more than the tolerance {tolerance} and 2 SE", figures)
    return Decision(passed, rule, f"{said}; {verdict}", figures)


def model_family(config) -> str:
    """What makes two models one family for the gate: the architecture (`architectures`, `model_type`)."""
    return f"{'/'.join(getattr(config, 'architectures', None) or [])}:{getattr(config, 'model_type', '')}"
