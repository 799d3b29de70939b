"""GRPO math against plain-Python reference implementations."""

from __future__ import annotations

import math

import pytest
import torch

from model_src.model.generate import response_mask_from
from model_src.rl.grpo import clipped_policy_loss, group_advantages


def test_group_advantages_match_reference():
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    got = group_advantages(torch.tensor(rewards), group_size=4)
    for g in range(3):
        group = rewards[4 * g:4 * g + 4]
        mean = sum(group) / 4
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / 4)
        for i, r in enumerate(group):
            assert got[4 * g + i].item() == pytest.approx((r - mean) / (std + 1e-6), abs=1e-5)
    assert torch.all(got[4:8] == 0)  # a uniform group teaches nothing


def _reference_loss(logp, old, adv, mask, lo, hi):
    per_sample = []
    for i in range(len(logp)):
        terms = []
        for t in range(len(logp[i])):
            if mask[i][t]:
                ratio = math.exp(logp[i][t] - old[i][t])
                clipped = min(max(ratio, 1 - lo), 1 + hi)
                terms.append(-min(ratio * adv[i], clipped * adv[i]))
        per_sample.append(sum(terms) / max(1, len(terms)))
    return sum(per_sample) / len(per_sample)


def test_clipped_loss_matches_reference_with_clip_higher():
    torch.manual_seed(0)
    logp = torch.randn(3, 5) * 0.3
    old = torch.randn(3, 5) * 0.3
    adv = torch.tensor([1.5, -0.7, 0.2])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    loss, stats = clipped_policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx(_reference_loss(logp.tolist(), old.tolist(), adv.tolist(),
                                                        mask.tolist(), 0.2, 0.28), rel=1e-5)
    assert 0.0 <= stats["clip_frac_high"] <= 1.0


def test_per_sample_averaging_does_not_let_long_samples_dominate():
    # two samples with equal per-token loss but different lengths weigh the same
    logp = torch.zeros(2, 4)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    loss, _ = clipped_policy_loss(logp, logp, adv, mask, 0.2, 0.28)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_loss_gradient_raises_logprob_of_positive_advantage():
    logp = torch.zeros(1, 3, requires_grad=True)
    loss, _ = clipped_policy_loss(logp, torch.zeros(1, 3), torch.tensor([1.0]), torch.ones(1, 3), 0.2, 0.28)
    loss.backward()
    assert torch.all(logp.grad < 0)  # descending the loss increases log p


def test_response_mask_stops_after_first_stop_token():
    responses = torch.tensor([[5, 6, 2, 7, 2], [5, 5, 5, 5, 5], [2, 9, 9, 9, 9]])
    mask = response_mask_from(responses, [2])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
