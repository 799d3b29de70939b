"""The GRPO loop of the RLCS stage (walking-skeleton version: uniform prompt sampling).

Each iteration samples prompts, draws `group_size` rollouts per prompt at top-p 1.0, scores them
with the same `score` that evaluation uses, computes group-relative advantages and takes
`updates_per_iteration` clipped policy-gradient steps (clip-higher, no KL, no entropy term).
"""

from __future__ import annotations

import random
import statistics
from typing import Callable

import torch

from model_src.config import RLConfig
from model_src.model.generate import generate
from model_src.model.inputs import prompt_example
from model_src.rewards import score
from model_src.rl.grpo import clipped_policy_loss, group_advantages, token_logprobs
from model_src.train.supervised import seed_everything


def response_logprobs(model, rollouts) -> torch.Tensor:
    """log p of each response token under `model`: [B, N]."""
    p = rollouts.prompt_len
    attention = torch.cat([rollouts.batch["attention_mask"], rollouts.response_mask], dim=1)
    # generated tokens are text: type 0 (M-RoPE positions of images come from the prompt part)
    token_types = torch.cat([rollouts.batch["mm_token_type_ids"], torch.zeros_like(rollouts.response_mask)], dim=1)
    logits = model(input_ids=rollouts.sequences, attention_mask=attention, mm_token_type_ids=token_types,
                   pixel_values=rollouts.batch["pixel_values"],
                   image_grid_thw=rollouts.batch["image_grid_thw"]).logits
    return token_logprobs(logits[:, p - 1:-1], rollouts.sequences[:, p:])


def train_grpo(model, processor, rows: list[dict], cfg: RLConfig, seed: int,
               log: Callable[[dict[str, float], int], None]) -> dict[str, float]:
    from tqdm import tqdm

    if not rows:
        raise ValueError("rlcs: no RL prompts")
    seed_everything(seed)
    rng = random.Random(seed)
    examples = [prompt_example(processor, row) for row in rows]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    history: list[dict[str, float]] = []
    for iteration in tqdm(range(cfg.num_iterations), desc="rlcs", unit="iter"):
        picked = rng.sample(range(len(examples)), k=min(cfg.prompts_per_iteration, len(examples)))
        group = [examples[i] for i in picked for _ in range(cfg.group_size)]
        rollouts = generate(model, processor, group, max_new_tokens=cfg.max_new_tokens, do_sample=True,
                            temperature=cfg.temperature, top_p=cfg.top_p)
        results = [score(ex.domain, text, ex.reference) for ex, text in zip(group, rollouts.texts)]
        rewards = torch.tensor([r.reward for r in results], dtype=torch.float32)
        advantages = group_advantages(rewards, cfg.group_size)
        grouped = rewards.view(-1, cfg.group_size)
        not_valid = ((grouped.max(dim=1).values - grouped.min(dim=1).values) == 0).float().mean().item()

        model.train()
        with torch.no_grad():
            old_logprobs = response_logprobs(model, rollouts)
        stats: dict[str, float] = {"policy_loss": 0.0, "clip_frac_high": 0.0, "clip_frac_low": 0.0}
        if advantages.abs().sum() > 0:  # all groups uniform: nothing to learn from this batch
            for _ in range(cfg.updates_per_iteration):
                logprobs = response_logprobs(model, rollouts)
                loss, clip_stats = clipped_policy_loss(logprobs, old_logprobs, advantages,
                                                       rollouts.response_mask, cfg.clip_low, cfg.clip_high)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                stats = {"policy_loss": loss.item(), **clip_stats}
        metrics = {
            "reward_mean": rewards.mean().item(),
            "reward_std": rewards.std(unbiased=False).item(),
            "format_ok_share": statistics.fmean(float(r.format_ok) for r in results),
            "not_valid_rate": not_valid,
            "response_length": rollouts.response_mask.sum(dim=1).float().mean().item(),
            **stats,
        }
        log(metrics, iteration)
        history.append(metrics)
    return {
        "first_reward_mean": history[0]["reward_mean"],
        "final_reward_mean": history[-1]["reward_mean"],
        "mean_reward_mean": statistics.fmean(h["reward_mean"] for h in history),
        "final_format_ok_share": history[-1]["format_ok_share"],
    }
