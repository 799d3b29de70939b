"""rlcs: reinforcement learning with curriculum sampling (GRPO) from the SFT model.

As in the paper (docs/recipe.md section 4): verifiable rewards per domain gated on the answer
format, group-relative advantages with clip-higher and no KL or entropy term, a curriculum that
samples prompts by their pass rate (tiers from easy to hard, floor weight for always-solved and
never-solved prompts) and dynamic expansion that draws extra groups so that the effective
groups (rewards that spread) fill each batch. It departs in scale: groups of 4-8 and tens of
iterations on a small model, rollouts through transformers `generate` unless vLLM is present.
"""

from __future__ import annotations

from model_src.lineage import Lineage
from model_src.stages.models import device_policy, load_model, save_model
from model_src.stages.plots import metric_curve, tier_histogram
from model_src.stages.runner import StageContext
from model_src.stages.training import run_training_stage


def work(ctx: StageContext) -> dict[str, float]:
    from contextlib import closing

    import mlflow

    from model_src.data.schema import read_split
    from model_src.rewards.batch import Scorer, reason_table
    from model_src.rl.loop import train_grpo
    from model_src.rl.rollout import make_engine

    policy = device_policy(ctx)
    model, processor = load_model(ctx.inputs["sft_model"], policy)
    # transformers `generate`, or vLLM where it is installed (rlcs.rollout_engine); rewards from the
    # verifiers in worker processes with a time limit, and the judge where `reward` names one
    with closing(make_engine(ctx.cfg.rlcs, model, processor, ctx.cfg.seed + 2)) as engine, \
            Scorer.from_config(ctx.cfg.reward) as scorer:
        summary, curriculum = train_grpo(model, processor, read_split(ctx.inputs["rl_data"]), ctx.cfg.rlcs,
                                         ctx.cfg.seed + 2, lambda m, s: ctx.log_metrics(m, s),
                                         checkpoint_dir=ctx.checkpoint_dir, checkpoint_meta={"run_id": ctx.run_id},
                                         engine=engine, autocast=policy.autocast, scorer=scorer)
    reasons = reason_table(scorer.reasons)  # every rank's rollouts: why each got its reward
    if ctx.is_main:
        mlflow.log_table(reasons, "reward_reasons.json")
        metric_curve(ctx, "reward_mean")
        tier_histogram(curriculum.history)
        mlflow.log_dict(curriculum.state_dict(), "curriculum_state.json")
        save_model(model, processor, ctx.outputs["model"])
    return summary


def run(*, lineage: str | Lineage, rl_data: str, sft_model: str, model_out: str, use_cache: bool = True) -> dict[str, float]:
    return run_training_stage("rlcs", lineage=lineage, inputs={"rl_data": rl_data, "sft_model": sft_model},
                              outputs={"model": model_out}, use_cache=use_cache)
