"""GRPO math as small, pure, shape-documented functions (after verl's core_algos).

No KL term and no entropy term; clip-higher (separate lower and upper clip bounds on the importance
ratio); per-sample loss averaging: mean over a sample's tokens, then over samples.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantages.

    rewards: [num_prompts * group_size], rollouts of one prompt contiguous.
    Returns [num_prompts * group_size]: (r - mean(group)) / (std(group) + eps); a group whose
    rollouts all scored the same gets zero advantage.
    """
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True, unbiased=False)
    return ((grouped - mean) / (std + eps)).view(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens[t] | ...) from logits aligned so that logits[:, t] predicts tokens[:, t].

    logits: [batch, seq, vocab], tokens: [batch, seq] -> [batch, seq]
    """
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-style clipped surrogate with clip-higher, averaged per sample then over samples.

    logprobs, old_logprobs, mask: [batch, seq] (mask 1 on response tokens); advantages: [batch].
    Returns (scalar loss, stats with the clip fractions).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(-1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    mask = mask.to(per_token.dtype)
    tokens_per_sample = mask.sum(dim=-1).clamp(min=1.0)
    per_sample = (per_token * mask).sum(dim=-1) / tokens_per_sample
    loss = per_sample.mean()
    with torch.no_grad():
        total = mask.sum().clamp(min=1.0)
        stats = {
            "clip_frac_high": float((((ratio > 1.0 + clip_high) & (adv > 0)).to(mask.dtype) * mask).sum() / total),
            "clip_frac_low": float((((ratio < 1.0 - clip_low) & (adv < 0)).to(mask.dtype) * mask).sum() / total),
        }
    return loss, stats
