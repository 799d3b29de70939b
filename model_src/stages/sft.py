"""sft: long chain-of-thought supervised fine-tuning from the pretrained model (the cold start).

As in the paper (docs/recipe.md section 3), the loss is on the assistant's tokens only and the rows
are `<think>...</think><answer>...</answer>`; rows whose reasoning is malformed (broken tags,
repeated blocks, several boxes) are rejected first, as the paper filters its SFT data. The
glm4v-9b profile's steps, batch and lr 1e-5 are this project's choice, not numbers from the paper;
the local profiles train a few hundred steps.
"""

from __future__ import annotations

from model_src.lineage import Lineage
from model_src.stages.models import checkpoint_logger, device_policy, load_model, save_model
from model_src.stages.plots import metric_curve
from model_src.stages.runner import StageContext
from model_src.stages.training import run_training_stage


def work(ctx: StageContext) -> dict[str, float]:
    from model_src.data.sft_filter import REJECTION_REASONS, filter_sft_rows
    from model_src.data.schema import read_split
    from model_src.model.inputs import sft_example
    from model_src.train.supervised import train_supervised

    policy = device_policy(ctx)
    model, processor = load_model(ctx.inputs["base_model"], policy)
    rows, rejected = filter_sft_rows(read_split(ctx.inputs["sft_data"]))
    ctx.log_metrics({"rows_rejected": sum(rejected.values()),
                     **{f"rejected/{reason}": rejected[reason] for reason in REJECTION_REASONS}})
    examples = [sft_example(processor, r) for r in rows]
    summary = train_supervised(model, processor, examples, ctx.cfg.sft, ctx.cfg.seed + 1,
                               lambda m, s: ctx.log_metrics(m, s), desc="sft",
                               checkpoint_dir=ctx.checkpoint_dir, checkpoint_meta={"run_id": ctx.run_id},
                               weights=[r["sample_weight"] for r in rows],
                               on_checkpoint=checkpoint_logger(ctx, model, processor), autocast=policy.autocast)
    if ctx.is_main:
        metric_curve(ctx)
        save_model(model, processor, ctx.outputs["model"])
    return {**summary, "num_examples": len(examples), "rows_rejected": sum(rejected.values())}


def run(*, lineage: str | Lineage, sft_data: str, base_model: str, model_out: str, use_cache: bool = True) -> dict[str, float]:
    return run_training_stage("sft", lineage=lineage, inputs={"sft_data": sft_data, "base_model": base_model},
                              outputs={"model": model_out}, use_cache=use_cache)
