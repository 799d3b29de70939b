"""pretrain: learn the tokenizer, build Glm4v from the profile, train it to caption images.

The paper pretrains the 9B model on a large multimodal corpus (image-caption, interleaved,
OCR, grounding, video, GUI) for 120k steps at 8,192 tokens and then extends the context to 32k
(docs/recipe.md section 2). Here the same loop trains a tiny or small random-init Glm4v on
the curated captions; with `model.init_from` it starts from released HF-format weights instead,
and with `pretrain.num_steps: 0` as well it only hands those weights on.

    thinkpipe run --profile tiny        # the whole DAG; this stage alone is `run(...)` below
"""

from __future__ import annotations

from model_src.lineage import Lineage
from model_src.stages.models import checkpoint_logger, device_policy, save_model
from model_src.stages.plots import metric_curve
from model_src.stages.runner import StageContext
from model_src.stages.training import run_training_stage


def work(ctx: StageContext) -> dict[str, float]:
    from model_src.data.schema import read_split
    from model_src.model.build import (apply_pixel_bounds, build_model, build_processor, load_model_and_processor,
                                       train_tokenizer)
    from model_src.model.inputs import pretrain_example
    from model_src.train.supervised import seed_everything, train_supervised

    rows = read_split(ctx.inputs["pretrain_data"])
    seed_everything(ctx.cfg.seed)
    if ctx.cfg.model.init_from:
        model, processor = load_model_and_processor(ctx.cfg.model.init_from)
        ctx.set_result("init_from", ctx.cfg.model.init_from)
        # the profile's pixel bounds win over the released processor's: the config says what the model sees
        for change in apply_pixel_bounds(processor, ctx.cfg.model):
            print(f"pretrain: model.min_pixels / max_pixels override the released {change}", flush=True)
    else:
        texts = [t for r in rows for t in (r["caption"], r["question"], r["reasoning"], r["answer"])]
        tokenizer = train_tokenizer(texts, ctx.cfg.tokenizer.vocab_size)
        processor = build_processor(tokenizer, ctx.cfg.model)
        model = build_model(ctx.cfg.model, tokenizer, ctx.cfg.seed)
    summary: dict[str, float] = {"skipped": 1.0}
    policy = device_policy(ctx)
    policy.place(model)
    if ctx.cfg.pretrain.num_steps > 0:
        examples = [pretrain_example(r) for r in rows]
        summary = train_supervised(model, processor, examples, ctx.cfg.pretrain, ctx.cfg.seed,
                                   lambda m, s: ctx.log_metrics(m, s), desc="pretrain",
                                   checkpoint_dir=ctx.checkpoint_dir, checkpoint_meta={"run_id": ctx.run_id},
                                   weights=[r["sample_weight"] for r in rows],
                                   on_checkpoint=checkpoint_logger(ctx, model, processor), autocast=policy.autocast)
        summary["num_examples"] = len(examples)
        if ctx.is_main:
            metric_curve(ctx)
    if ctx.is_main:  # in a multi-process training job the other ranks only train
        save_model(model, processor, ctx.outputs["model"])
    return {**summary, "num_parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(processor.tokenizer)}


def run(*, lineage: str | Lineage, pretrain_data: str, model_out: str, use_cache: bool = True) -> dict[str, float]:
    return run_training_stage("pretrain", lineage=lineage, inputs={"pretrain_data": pretrain_data},
                              outputs={"model": model_out}, use_cache=use_cache)
