"""The GRPO loop of the RLCS stage: curriculum sampling, dynamic expansion, clipped updates.

Each iteration
1. samples prompts by curriculum weight (`model_src.rl.curriculum`), oversampling by the EMA of
   the expansion ratio;
2. draws `group_size` rollouts per prompt at top-p 1.0 and scores them with the same `score`
   that evaluation uses;
3. keeps the `prompts_per_iteration` groups with the largest reward spread (most balanced between
   right and wrong);
4. takes `updates_per_iteration` clipped policy-gradient steps (clip-higher, no KL, no entropy
   term, per-sample averaging) over the kept groups;
5. folds every sampled prompt's pass rate into the curriculum and logs the monitor metrics.

With `rlcs.curriculum=false` it is the uniform-sampling ablation (no weights, no expansion).

Data-parallel over the processes of a job (torchrun; one process alone is a world of one): every
rank makes the same curriculum draw (the same seeded sampler and the same curriculum state), rolls
out and scores its share of the prompt groups (`picked[rank::world]`), and all-gathers every
group's rewards, so the selection of groups, the curriculum's pass-rate and expansion updates and
the metrics see the whole step on every rank. Advantages are group-relative and a group never
spans ranks, so each rank computes its own; each rank's loss is weighted by its share of the
step's kept samples and the gradients are summed over ranks before one identical optimizer step.
Each group's rollouts come from its own seed (`derived_seed(seed, iteration, prompt id)`), so how
groups are split over ranks does not change them: N processes train like one.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import torch

from model_src.config import RLConfig, derive
from model_src.device import model_device, to_device
from model_src.model.build import enable_activation_checkpointing
from model_src.model.generate import Rollouts, derived_seed
from model_src.model.inputs import Example, prompt_example
from model_src.rewards.batch import Scorer, ScoreRequest
from model_src.rl.curriculum import Curriculum, most_balanced
from model_src.rl.grpo import clipped_policy_loss, group_advantages, token_logprobs
from model_src.rl.rollout import RolloutEngine, TransformersEngine
from model_src.train.distributed import all_gather_objects, all_reduce_gradients, all_reduce_sum, process_group
from model_src.train.supervised import seed_everything


def response_logprobs(model, rollouts: Rollouts) -> torch.Tensor:
    """log p of each response token under `model`: [B, N], on the model's device."""
    p = rollouts.prompt_len
    attention = torch.cat([rollouts.batch["attention_mask"], rollouts.response_mask], dim=1)
    # generated tokens are text: type 0 (M-RoPE positions of images come from the prompt part)
    token_types = torch.cat([rollouts.batch["mm_token_type_ids"], torch.zeros_like(rollouts.response_mask)], dim=1)
    inputs = to_device(dict(input_ids=rollouts.sequences, attention_mask=attention, mm_token_type_ids=token_types,
                            pixel_values=rollouts.batch["pixel_values"],
                            image_grid_thw=rollouts.batch["image_grid_thw"]), model_device(model))
    logits = model(**inputs).logits
    return token_logprobs(logits[:, p - 1:-1], inputs["input_ids"][:, p:])


@dataclass(frozen=True)
class GroupOutcome:
    """What every rank needs to know of one prompt group, whichever rank rolled it out."""

    row_id: str
    domain: str
    rewards: tuple[float, ...]
    format_ok: tuple[bool, ...]
    forced: tuple[bool, ...]
    response_lengths: tuple[int, ...]

    @classmethod
    def of(cls, ex: Example, g: int, size: int, rollouts: Rollouts, rewards: torch.Tensor, results) -> "GroupOutcome":
        """Group `g` (rows g*size .. (g+1)*size) of one generate call's rollouts, rewards and results."""
        rows = range(g * size, (g + 1) * size)
        return cls(ex.row_id, ex.domain, tuple(rewards[r].item() for r in rows), tuple(results[r].format_ok for r in rows),
                   tuple(rollouts.forced[r] for r in rows),
                   tuple(int(rollouts.response_mask[r].sum()) for r in rows))

    @property
    def pass_rate(self) -> float:
        return float(torch.tensor(self.rewards).mean())

    @property
    def spread(self) -> float:
        return float(torch.tensor(self.rewards).std(unbiased=False))


# the scorer's counts logged per iteration (model_src/rewards/batch.py), under these names
SCORING_METRICS = ("reward_timeouts", "judge_calls", "judge_cache_hits", "judge_unreachable", "judge_unparsed")
SPREAD_EPS = 1e-6  # a group whose rewards spread less than this has (numerically) zero advantage

RewardFn = Callable[[str, str, str], float]  # (domain, response, reference) -> reward


def rollout_groups(model, processor, prompts: list[Example], cfg: RLConfig, prompts_per_chunk: int,
                   reward_fn: RewardFn | None = None, engine: RolloutEngine | None = None,
                   group_seed: Callable[[str], int] | None = None, scorer: Scorer | None = None):
    """Generate `group_size` rollouts per prompt, `prompts_per_chunk` prompts per generate call,
    with `engine` (transformers `generate` on `model` when None); with `group_seed`, each prompt's
    group is sampled from the seed it gives for the prompt's id (else from torch's generator).
    A chunk's rollouts are scored together by `scorer` (in this process when None).
    Yields (chunk prompts, Rollouts, rewards [len(chunk) * group_size], RewardResults)."""
    engine = engine or TransformersEngine(model, processor)
    scorer = scorer or Scorer()
    for start in range(0, len(prompts), prompts_per_chunk):
        chunk = prompts[start:start + prompts_per_chunk]
        group = [ex for ex in chunk for _ in range(cfg.group_size)]
        rollouts = engine.generate(chunk, n=cfg.group_size, max_new_tokens=cfg.max_new_tokens, do_sample=True,
                                   temperature=cfg.temperature, top_p=cfg.top_p,
                                   force_answer_tokens=cfg.force_answer_tokens,
                                   seeds=None if group_seed is None else [group_seed(ex.row_id) for ex in chunk])
        results = scorer.score_many([ScoreRequest(ex.domain, text, ex.reference, ex.prompt, ex.verifier)
                                     for ex, text in zip(group, rollouts.texts)])
        rewards = ([r.reward for r in results] if reward_fn is None
                   else [reward_fn(ex.domain, text, ex.reference) for ex, text in zip(group, rollouts.texts)])
        yield chunk, rollouts, torch.tensor(rewards, dtype=torch.float32), results


def grade_offline(model, processor, examples: list[Example], cfg: RLConfig,
                  engine: RolloutEngine | None = None, seed: int = 0, scorer: Scorer | None = None) -> dict[str, float]:
    """Grading before RL: each prompt's mean reward over `offline_k` sampled rollouts (for
    right/wrong rewards, the share that are right: the pass rate the curriculum starts from).
    Each rank grades its share of the prompts; every rank returns all the rates."""
    rank, world = process_group()
    graded = derive(cfg, "rlcs", group_size=cfg.offline_k)
    rates: dict[str, float] = {}
    for chunk, _, rewards, _ in rollout_groups(model, processor, examples[rank::world], graded,
                                               cfg.prompts_per_iteration, engine=engine, scorer=scorer,
                                               group_seed=lambda row_id: derived_seed(seed, "offline", row_id)):
        for ex, group in zip(chunk, rewards.view(-1, cfg.offline_k)):
            rates[ex.row_id] = float(group.mean())
    return {k: v for part in all_gather_objects(rates) for k, v in part.items()}


def build_curriculum(model, processor, rows: list[dict], examples: list[Example], cfg: RLConfig,
                     engine: RolloutEngine | None = None, seed: int = 0, scorer: Scorer | None = None) -> Curriculum:
    """Initial pass rates: offline pass@k when `offline_k` > 0, merged with the generator's prior
    (pass rate ~ 1 - difficulty) as an equal-weight average; the prior alone otherwise."""
    prior = {row["id"]: 1.0 - float(row["difficulty"]) for row in rows}
    if cfg.offline_k > 0:
        graded = grade_offline(model, processor, examples, cfg, engine, seed, scorer)
        prior = {i: 0.5 * prior[i] + 0.5 * graded[i] for i in prior}
    return Curriculum(pass_rates=prior, floor=cfg.curriculum_floor, alpha=cfg.curriculum_alpha,
                      ema_decay=cfg.expansion_ema_decay, max_ratio=cfg.max_expansion_ratio,
                      thresholds=tuple(cfg.tier_thresholds), uniform=not cfg.curriculum,
                      data_weight={row["id"]: float(row.get("sample_weight") or 1.0) for row in rows},
                      task_of={row["id"]: f"{row['domain']}/{row.get('task') or ''}" for row in rows},
                      seen=set(prior) if cfg.offline_k > 0 else set())


def train_grpo(model, processor, rows: list[dict], cfg: RLConfig, seed: int,
               log: Callable[[dict[str, float], int], None], checkpoint_dir: Path | None = None,
               checkpoint_meta: dict | None = None,
               reward_fn: RewardFn | None = None,
               engine: RolloutEngine | None = None,
               autocast: Callable[[], ContextManager] = nullcontext,
               scorer: Scorer | None = None) -> tuple[dict[str, float], Curriculum]:
    """With `checkpoint_dir`, checkpoints every `cfg.checkpoint_every` iterations hold the model,
    optimizer, every RNG (the sampler's too), the curriculum state and the history, and an existing
    one is resumed. `reward_fn` defaults to `score`'s reward (tests pass a graded stand-in).
    Rollouts come from `engine` (transformers `generate` on `model` when None; the RLCS stage
    passes `make_engine`'s choice); it is synced to the policy's weights after loading a checkpoint
    and after every update. Forward passes run under `autocast()` (the device policy's precision);
    the model is wherever the stage placed it. Rollouts are scored by `scorer` (the RLCS stage's is
    `Scorer.from_config(cfg.reward)`: worker processes with a time limit, and the judge where
    configured); in this process when None."""
    from tqdm import tqdm

    from model_src.train.checkpoint import (DS_FOLDER, resume_deepspeed, resume_latest, rng_state, save_checkpoint,
                                            save_deepspeed_checkpoint, set_rng_state)

    if not rows:
        raise ValueError("rlcs: no RL prompts")
    rank, world = process_group()
    scorer = scorer or Scorer()
    seed_everything(seed)
    rng = random.Random(seed)
    examples = [prompt_example(processor, row) for row in rows]
    by_id = {ex.row_id: ex for ex in examples}
    if world > cfg.prompts_per_iteration:
        raise ValueError(f"rlcs: {world} processes but rlcs.prompts_per_iteration={cfg.prompts_per_iteration}: "
                         "every process needs at least one prompt group per iteration")
    if cfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    ds = None
    if cfg.deepspeed:  # ZeRO-1/2: weights whole on every rank, gradients and optimizer states sharded
        from model_src.train.distributed import init_engine

        ds = init_engine(model, optimizer, None, micro_batch=1, zero_stage=cfg.zero_stage, max_grad_norm=1.0)
    engine = engine or TransformersEngine(model, processor)
    ds_dir = checkpoint_dir / DS_FOLDER if checkpoint_dir and ds is not None else None
    found = resume_latest(checkpoint_dir, model, optimizer, None) if checkpoint_dir and ds is None else None
    resumed, meta = found if found is not None else (None, None)
    history: list[dict[str, float]] = []
    total_rollouts = 0
    first_iteration = 0
    ds_meta = resume_deepspeed(ds, ds_dir) if ds_dir is not None else None  # every rank loads its optimizer shard
    if ds_meta is not None:
        meta = ds_meta
        set_rng_state(meta["rng"])
        resumed = ds_dir
    if resumed is not None:  # the offline grading is in the saved curriculum: not redone
        engine.sync_weights(model)
        curriculum = build_curriculum(model, processor, rows, examples, derive(cfg, "rlcs", offline_k=0))
        curriculum.load_state_dict(meta["curriculum"])
        rng.setstate(meta["extra_state"]["sampler_rng"])
        first_iteration, history, total_rollouts = meta["step"], meta["history"], meta["total_rollouts"]
        print(f"rlcs: resuming from {resumed} (iteration {first_iteration})", flush=True)
    else:
        with autocast():  # offline grading rolls out too
            curriculum = build_curriculum(model, processor, rows, examples, cfg, engine, seed, scorer)
    for iteration in tqdm(range(first_iteration, cfg.num_iterations), desc="rlcs", unit="iter",
                          initial=first_iteration, total=cfg.num_iterations, disable=rank != 0):
        # the same draw on every rank (same sampler state, same curriculum); each rolls out its share
        picked = [by_id[i] for i in curriculum.sample(sorted(by_id), cfg.prompts_per_iteration, rng)]
        counted = Counter(scorer.stats)
        with autocast():
            chunks = list(rollout_groups(model, processor, picked[rank::world], cfg, cfg.prompts_per_iteration,
                                         reward_fn, engine, scorer=scorer,
                                         group_seed=lambda row_id: derived_seed(seed, iteration, row_id)))
        scoring = scorer.stats - counted  # this iteration's timeouts and judge calls, this rank
        total_rollouts += len(picked) * cfg.group_size
        # every group's outcome, from every rank, in the draw's order: what selection, curriculum and
        # metrics see does not depend on the split
        mine = [GroupOutcome.of(ex, g, cfg.group_size, ro, rewards, results)
                for chunk, ro, rewards, results in chunks for g, ex in enumerate(chunk)]
        outcomes = {o.row_id: o for part in all_gather_objects(mine) for o in part}
        groups = [outcomes[ex.row_id] for ex in picked]
        observed = {o.row_id: o.pass_rate for o in groups}
        spread = {o.row_id: o.spread for o in groups}
        valid = {i: s > SPREAD_EPS for i, s in spread.items()}
        # keep the most balanced groups, up to the batch size (expansion oversampled the rest)
        keep = set(most_balanced([spread[ex.row_id] for ex in picked], cfg.prompts_per_iteration))
        kept_ids = {picked[i].row_id for i in keep}
        # this rank's kept rollouts with their (group-relative) advantages, in micro-batches of
        # `rlcs.micro_batch_size` rows, each one forward
        micro: list[tuple[Rollouts, torch.Tensor]] = []
        for chunk, rollouts, rewards, _ in chunks:
            rows_kept = [g * cfg.group_size + k for g, ex in enumerate(chunk) if ex.row_id in kept_ids
                         for k in range(cfg.group_size)]
            if rows_kept:
                advantages = group_advantages(rewards[rows_kept], cfg.group_size)
                size = cfg.micro_batch_size or len(rows_kept)
                micro += [(rollouts.select(rows_kept[i:i + size]), advantages[i:i + size])
                          for i in range(0, len(rows_kept), size)]
        num_kept = len(kept_ids) * cfg.group_size  # over all ranks
        if ds is not None:
            # DeepSpeed's gradient reduction is a collective in every backward: every rank runs as
            # many as the busiest one, the extra ones on a rollout of its own with zero weight
            real = len(micro)
            steps = max(all_gather_objects(real))
            micro += [(chunks[0][1].select([0]), torch.zeros(1))] * (steps - real)
            weights = [1.0] * real + [0.0] * (steps - real)
        else:
            weights = [1.0] * len(micro)

        model.train()
        # the behaviour policy's log-probs: the first update's forward runs at the weights that rolled
        # out, so its detached log-probs are them (as TRL does); no separate no-grad forward
        old_logprobs: list[torch.Tensor | None] = [None] * len(micro)
        stats = {"policy_loss": 0.0, "clip_frac_high": 0.0, "clip_frac_low": 0.0}
        if any(spread[i] > 0 for i in kept_ids):  # else every kept group is uniform: no advantage anywhere
            for _ in range(cfg.updates_per_iteration):
                optimizer.zero_grad(set_to_none=True)
                total = clip_high = clip_low = 0.0
                for index, ((ro, adv), weight) in enumerate(zip(micro, weights)):
                    with autocast():
                        logprobs = response_logprobs(model, ro)
                    if old_logprobs[index] is None:
                        old_logprobs[index] = logprobs.detach()
                    old = old_logprobs[index]
                    loss, clip = clipped_policy_loss(logprobs, old, adv.to(logprobs.device),
                                                     ro.loss_mask.to(logprobs.device), cfg.clip_low, cfg.clip_high)
                    share = weight * len(adv) / num_kept  # per-sample mean over all kept samples, all ranks
                    if ds is None:
                        (loss * share).backward()
                    else:  # DeepSpeed averages over ranks: scale back up to the sum
                        ds.set_gradient_accumulation_boundary(index == len(micro) - 1)
                        ds.backward(loss * share * world)
                        ds.step()  # the optimizer steps (clipped) at the boundary only
                    total += loss.item() * share
                    clip_high += clip["clip_frac_high"] * share
                    clip_low += clip["clip_frac_low"] * share
                if ds is None:
                    all_reduce_gradients(model)  # the sum of the ranks' shares: the whole step's gradient
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                stats = {"policy_loss": all_reduce_sum(total), "clip_frac_high": all_reduce_sum(clip_high),
                         "clip_frac_low": all_reduce_sum(clip_low)}
            engine.sync_weights(model)  # the next rollouts come from the updated policy

        all_rewards = torch.tensor([r for o in groups for r in o.rewards], dtype=torch.float32)
        by_domain: dict[str, list[float]] = {}
        for o in groups:
            by_domain.setdefault(o.domain, []).extend(o.rewards)
        metrics = {
            "reward_mean": all_rewards.mean().item(),
            "reward_std": all_rewards.std(unbiased=False).item(),
            "format_ok_share": statistics.fmean(float(f) for o in groups for f in o.format_ok),
            # groups with an advantage: among those the update used (what expansion raises), and among
            # all the iteration drew (what it had to draw to get them)
            "effective_group_share": statistics.fmean(float(valid[i]) for i in kept_ids),
            "sampled_effective_group_share": statistics.fmean(float(valid[ex.row_id]) for ex in picked),
            "forced_answer_share": statistics.fmean(float(f) for o in groups for f in o.forced),
            "sampled_prompts": float(len(picked)),
            "response_length": statistics.fmean(float(n) for o in groups for n in o.response_lengths),
            "rollouts_total": float(total_rollouts),
            **{f"reward_mean/{d}": statistics.fmean(v) for d, v in by_domain.items()},
            **{f"reward_std/{d}": statistics.pstdev(v) for d, v in by_domain.items()},
            # rollout accuracy: the share of a domain's rollouts that are right (reward 1)
            **{f"accuracy/{d}": statistics.fmean(float(r >= 1.0) for r in v) for d, v in by_domain.items()},
            **stats,
            **curriculum.update(observed, valid),
            # scoring calls that ran out of time (scored 0), and the judge's traffic when there is one
            **{name: all_reduce_sum(float(scoring[name])) for name in SCORING_METRICS
               if name == "reward_timeouts" or scorer.judge is not None},
        }
        if metrics["expansion_cap_hit"] and cfg.curriculum and rank == 0:  # the uniform ablation does not expand
            tqdm.write(f"rlcs: iteration {iteration}: expansion ratio {1 / max(1e-9, 1 - metrics['not_valid_rate']):.1f} "
                       f"capped at rlcs.max_expansion_ratio={cfg.max_expansion_ratio}")
        log(metrics, iteration)
        history.append(metrics)
        if cfg.max_rollouts and total_rollouts >= cfg.max_rollouts:
            break
        done = iteration + 1
        if checkpoint_dir and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.num_iterations:
            meta = {**(checkpoint_meta or {}), "curriculum": curriculum.state_dict(), "history": history,
                    "total_rollouts": total_rollouts}
            if ds is not None:  # every rank writes its optimizer shard
                save_deepspeed_checkpoint(ds, ds_dir, done, {**meta, "step": done, "rng": rng_state(),
                                                             "extra_state": {"sampler_rng": rng.getstate()}})
            elif rank == 0:  # every rank holds the same weights, optimizer and sampler state
                save_checkpoint(checkpoint_dir, done, model, optimizer, None, meta,
                                extra_state={"sampler_rng": rng.getstate()})
    summary = {
        "first_reward_mean": history[0]["reward_mean"],
        "final_reward_mean": history[-1]["reward_mean"],
        "mean_reward_mean": statistics.fmean(h["reward_mean"] for h in history),
        "mean_effective_group_share": statistics.fmean(h["effective_group_share"] for h in history),
        "final_format_ok_share": history[-1]["format_ok_share"],
        "rollouts_total": float(total_rollouts),
        "expansion_cap_hits": float(curriculum.cap_hits),
        "reward_timeouts": sum(h.get("reward_timeouts", 0.0) for h in history),
    }
    return summary, curriculum
