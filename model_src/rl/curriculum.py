"""Curriculum sampling (RLCS) and dynamic sampling expansion, as small pure pieces.

Difficulty is a prompt's pass rate p: the mean reward of its rollouts (the share of correct ones
when rewards are right/wrong). GRPO learns nothing from a group whose rollouts all scored the same
(all right or all wrong: zero advantage) and most from p near 1/2, so the sampling weight is

    w(p) = floor + (1 - floor) * 4 p (1 - p)

(1 at p = 1/2, `floor` at p = 0 or 1: too-easy and currently-too-hard prompts are drawn less but
never starved). A prompt's p starts from its offline grade (pass@k of the SFT model, or the
generator's difficulty prior) and is updated after every iteration in which it was sampled:
p <- (1 - alpha) p + alpha * observed. Prompts of one task (domain/task) are alike, so a prompt not
sampled yet takes its task's online pass rate (the same EMA over every sampled prompt of the task)
once the task has been seen: a few all-wrong chart groups mark every chart prompt as too hard for
now instead of waiting until each was drawn. Tiers bucket p for the monitor (tier 0 = easiest).

Expansion (docs/recipe.md section 4): not_valid_rate = share of last iteration's groups with zero
advantage (every rollout scored the same); expansion_ratio = 1 / (1 - not_valid_rate), capped; its
EMA sets how many prompts to oversample next iteration, of which the groups with the largest reward
spread (for right/wrong rewards: the ones nearest half right) are kept, up to the batch size.

>>> sampling_weight(0.5, floor=0.1)
1.0
>>> round(sampling_weight(1.0, floor=0.1), 3)
0.1
>>> expansion_ratio(0.5, cap=4.0)
2.0
>>> tier_of(0.95, (0.8, 0.6, 0.4, 0.2))
0
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


def sampling_weight(pass_rate: float, floor: float) -> float:
    return floor + (1.0 - floor) * 4.0 * pass_rate * (1.0 - pass_rate)


def tier_of(pass_rate: float, thresholds: tuple[float, ...]) -> int:
    """Tier 0 for pass rates >= thresholds[0] (easiest), ..., len(thresholds) below the last."""
    for tier, threshold in enumerate(thresholds):
        if pass_rate >= threshold:
            return tier
    return len(thresholds)


def expansion_ratio(not_valid_rate: float, cap: float) -> float:
    """1 / (1 - not_valid_rate), capped (an all-invalid batch would ask for infinity)."""
    if not_valid_rate >= 1.0:
        return cap
    return min(cap, 1.0 / (1.0 - not_valid_rate))


def most_balanced(group_spreads: list[float], keep: int) -> list[int]:
    """Indices of the `keep` groups with the largest reward spread (standard deviation; for
    right/wrong rewards it is sqrt(p (1 - p)), largest at half right); ties: earlier first."""
    order = sorted(range(len(group_spreads)), key=lambda i: (-group_spreads[i], i))
    return sorted(order[:keep])


@dataclass
class Curriculum:
    """Per-prompt difficulty state and the expansion EMA; `state_dict` goes into checkpoints."""

    pass_rates: dict[str, float]
    floor: float = 0.1
    alpha: float = 0.5
    ema_decay: float = 0.8
    max_ratio: float = 4.0
    thresholds: tuple[float, ...] = (0.8, 0.6, 0.4, 0.2)
    ratio_ema: float = 1.0
    uniform: bool = False  # the ablation: plain uniform sampling, no expansion
    # curation's domain/concept balance weight per prompt id (`sample_weight`); missing ids weigh 1
    data_weight: dict[str, float] = field(default_factory=dict)
    # prompt id -> task ("domain/task"); a prompt not sampled yet takes its task's online pass rate
    task_of: dict[str, str] = field(default_factory=dict)
    task_rates: dict[str, float] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    cap_hits: int = 0
    history: list[dict] = field(default_factory=list)

    def weights(self, ids: list[str]) -> list[float]:
        """Sampling weight per prompt: its data weight times, unless uniform, its pass-rate weight."""
        data = [self.data_weight.get(i, 1.0) for i in ids]
        if self.uniform:
            return data
        return [d * sampling_weight(self.estimate(i), self.floor) for d, i in zip(data, ids)]

    def estimate(self, prompt_id: str) -> float:
        """The prompt's own pass rate once sampled (or graded offline), else its task's online
        rate once the task was seen, else its prior."""
        if prompt_id in self.seen:
            return self.pass_rates[prompt_id]
        return self.task_rates.get(self.task_of.get(prompt_id, ""), self.pass_rates[prompt_id])

    def num_to_sample(self, batch_size: int, available: int) -> int:
        if self.uniform:
            return min(batch_size, available)
        return min(available, math.ceil(batch_size * self.ratio_ema))

    def sample(self, ids: list[str], batch_size: int, rng: random.Random) -> list[str]:
        """Weighted sampling without replacement (Efraimidis-Spirakis keys)."""
        count = self.num_to_sample(batch_size, len(ids))
        keyed = sorted(ids, key=lambda i, w=dict(zip(ids, self.weights(ids))): -rng.random() ** (1.0 / w[i]))
        return keyed[:count]

    def update(self, observed: dict[str, float], valid: dict[str, bool] | None = None) -> dict[str, float]:
        """Fold one iteration's pass rates in; `valid` says which groups had a non-zero advantage
        (default: 0 < pass rate < 1). Returns the monitor metrics."""
        before = {prompt_id: self.estimate(prompt_id) for prompt_id in observed}
        for prompt_id, rate in observed.items():
            self.pass_rates[prompt_id] = (1 - self.alpha) * before[prompt_id] + self.alpha * rate
            self.seen.add(prompt_id)
            task = self.task_of.get(prompt_id)
            if task is not None:
                self.task_rates[task] = (1 - self.alpha) * self.task_rates.get(task, rate) + self.alpha * rate
        if valid is None:
            valid = {i: 0.0 < r < 1.0 for i, r in observed.items()}
        invalid = sum(1 for i in observed if not valid[i]) / max(1, len(observed))
        raw = expansion_ratio(invalid, self.max_ratio)
        capped = raw >= self.max_ratio
        self.cap_hits += int(capped)
        self.ratio_ema = self.ema_decay * self.ratio_ema + (1 - self.ema_decay) * raw
        histogram = self.tier_histogram()
        metrics = {"not_valid_rate": invalid, "expansion_ratio": raw, "expansion_ratio_ema": self.ratio_ema,
                   "expansion_cap_hit": float(capped),
                   **{f"tier_{t}": float(n) for t, n in enumerate(histogram)}}
        self.history.append({"tiers": histogram, "ratio_ema": self.ratio_ema})
        return metrics

    def tier_histogram(self) -> list[int]:
        counts = [0] * (len(self.thresholds) + 1)
        for prompt_id in self.pass_rates:
            counts[tier_of(self.estimate(prompt_id), self.thresholds)] += 1
        return counts

    def state_dict(self) -> dict:
        return {"pass_rates": dict(self.pass_rates), "ratio_ema": self.ratio_ema, "cap_hits": self.cap_hits,
                "history": list(self.history), "seen": sorted(self.seen), "task_rates": dict(self.task_rates)}

    def load_state_dict(self, state: dict) -> None:
        self.pass_rates = dict(state["pass_rates"])
        self.ratio_ema = float(state["ratio_ema"])
        self.cap_hits = int(state["cap_hits"])
        self.history = list(state["history"])
        # checkpoints from before task pooling lack these: every prompt there counted as seen
        self.seen = set(state.get("seen", self.pass_rates))
        self.task_rates = dict(state.get("task_rates", {}))
