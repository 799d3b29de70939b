"""One entry point per pipeline stage. Components call these and nothing else.

Each `*_stage` function takes plain strings and paths (what a KFP component has), runs its work
through `model_src.stage.run_stage` (cache key, nested MLflow run, outputs) and returns the final
metrics. Run the whole chain with `thinkpipe run`; each stage is also callable on its own, e.g.

    python -c "from model_src.stages import curate_stage; ..."
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from model_src.config import config_from_json, config_hash
from model_src.lineage import PIPELINE_RUN_ENV, Lineage, LineageError, dvc_dir_hash, hash_path
from model_src.stage import StageContext, run_stage, skip_final_gc

MODEL_CARD = "README.md"


# ---------------------------------------------------------------------------------------- init
def init_stage(*, config_json: str, data_dir: str, git_commit: str, data_hash: str, data_rev: str,
               image: str, pipeline_run_name: str, lineage_out: str) -> Lineage:
    """Check the data against its DVC pin, open the pipeline's parent MLflow run and an `init`
    run under it, and write the lineage every later stage reads."""
    import mlflow

    from model_src.tracking import ensure_experiment

    cfg = config_from_json(config_json)
    actual = dvc_dir_hash(data_dir)
    if data_hash and actual != data_hash:
        raise LineageError(f"data folder {data_dir} hashes to {actual}, but data.dvc pins {data_hash}: "
                           f"run `make data` (dvc pull / checkout) first")
    experiment_id = ensure_experiment(cfg.experiment)
    # the stages find this run by the pipeline run's id (locally the run name, on a cluster the
    # workflow's); pipeline_run_name is the name people gave it
    run_id_tag = os.environ.get(PIPELINE_RUN_ENV) or pipeline_run_name
    lineage = Lineage(git_commit=git_commit or "unknown", data_hash=actual, data_rev=data_rev or "unknown",
                      config_hash=config_hash(cfg), image=image, experiment_id=experiment_id,
                      pipeline_run_name=run_id_tag)
    parent = mlflow.MlflowClient().create_run(
        experiment_id, run_name=pipeline_run_name or run_id_tag or None,
        tags={**lineage.tags(), "thinkpipe.stage": "pipeline", "thinkpipe.profile": cfg.profile})
    parent_id = parent.info.run_id
    client = mlflow.MlflowClient()
    client.log_text(parent_id, json.dumps(cfg.to_dict(), indent=2, sort_keys=True), "config.json")
    client.log_param(parent_id, "profile", cfg.profile)
    client.log_param(parent_id, "seed", cfg.seed)
    lineage = Lineage(**{**lineage.__dict__, "parent_run_id": parent_id})
    with mlflow.start_run(experiment_id=experiment_id, run_name="init", parent_run_id=parent_id,
                          tags={**lineage.tags(), "thinkpipe.stage": "init"}):
        mlflow.log_text(cfg.to_json(), "config.json")
        mlflow.log_params({"profile": cfg.profile, "seed": cfg.seed, "data_dir": data_dir})
    Path(lineage_out).parent.mkdir(parents=True, exist_ok=True)
    Path(lineage_out).write_text(lineage.to_json())
    skip_final_gc()
    return lineage


# ---------------------------------------------------------------------------------- check data
def check_data_stage(*, config_json: str, data_repo: str, data_branch: str, data_root: str,
                     pipeline_run_name: str = "") -> dict[str, str]:
    """The retraining pipeline's first step: clone the project's repository, compare its DVC pin
    with the champion's training data and, when it changed, pull that data to
    `data_root/<hash>` for the training DAG. Returns the decision and where the data is."""
    import tempfile

    from model_src.retrain import check_data, clone_repo, log_decision, materialize_data
    from model_src.tracking import ensure_experiment

    cfg = config_from_json(config_json)
    with tempfile.TemporaryDirectory() as tmp:
        clone = clone_repo(data_repo, data_branch, Path(tmp) / "repo")
        decision = check_data(clone, cfg.export.registered_model_name)
        log_decision(decision, ensure_experiment(cfg.experiment), pipeline_run_name or "retrain-check")
        print(f"check_data: {'retrain' if decision.retrain else 'skip'}: {decision.reason}", flush=True)
        data_dir = str(materialize_data(clone, decision.latest, data_root)) if decision.retrain else ""
    skip_final_gc()
    return {"retrain": decision.retrain, "reason": decision.reason, "data_hash": decision.latest.data_hash,
            "data_rev": decision.latest.data_rev, "data_dir": data_dir}


# -------------------------------------------------------------------------------------- curate
def log_data_input(path: str | Path, lineage: Lineage, context: str) -> None:
    """Record which DVC-pinned data fed this run as an MLflow dataset input (rev and hash)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source = resolve_dataset_source(str(Path(path).resolve()))
    digest = lineage.data_hash.removesuffix(".dir")
    dataset = MetaDataset(source=source, name=f"data/raw@{lineage.data_rev[:12]}", digest=digest[:36])
    mlflow.log_input(dataset, context=context,
                     tags={"dvc.path": "data/raw", "dvc.hash": lineage.data_hash, "dvc.rev": lineage.data_rev})


def curate_stage(*, config_json: str, lineage_path: str, data_dir: str, outputs: dict[str, str],
                 use_cache: bool = True) -> dict[str, float]:
    """outputs: folders for `pretrain`, `sft`, `rl`, `eval` and `report`. A failed quality gate
    fails the stage (so the pipeline stops before training) after logging the report and Data Docs."""
    from model_src.data.curate import curate
    from model_src.data.quality import GateError

    def work(ctx: StageContext) -> dict[str, float]:
        import mlflow

        log_data_input(ctx.inputs["raw"], ctx.lineage, "curation")
        report_dir = ctx.outputs["report"]
        try:
            report = curate(ctx.inputs["raw"], ctx.outputs, ctx.cfg.curate)
        except GateError:
            mlflow.log_artifacts(str(report_dir), "failed_curation")
            raise
        mlflow.log_dict(report, "report.json")
        mlflow.log_artifacts(str(report_dir / "plots"), "plots")
        return {"input_rows": report["input_rows"], "kept_rows": report["kept_rows"],
                "quarantined_rows": report["quarantined_rows"], "recaptioned_rows": report["recaptioned_rows"],
                **{f"rows/{split}": n for split, n in report["split_rows"].items()},
                **{f"quarantined/{reason}": n for reason, n in report["quarantine_reasons"].items()},
                **{f"kept/{domain}": n for domain, n in report["kept_by_domain"].items()}}

    return run_stage("curate", config_json=config_json, lineage_path=lineage_path,
                     inputs={"raw": data_dir}, outputs=outputs, config_sections=("curate",),
                     work=work, use_cache=use_cache)


# ------------------------------------------------------------------------------------ training
def save_model(model, processor, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _load(folder: str | Path):
    from model_src.model.build import load_model_and_processor

    return load_model_and_processor(str(folder))


def _loss_plot(ctx: StageContext, metric: str = "loss") -> None:
    """Loss curve as a PNG on the run, for people who would rather look than read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    history = mlflow.MlflowClient().get_metric_history(ctx.run_id, metric)
    if not history:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([m.step for m in history], [m.value for m in history])
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{ctx.stage}: {metric}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    mlflow.log_figure(fig, f"plots/{metric}.png")
    plt.close(fig)


def _tier_plot(history: list[dict]) -> None:
    """The curriculum monitor: prompts per difficulty tier after each RL iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    if not history:
        return
    tiers = list(zip(*(h["tiers"] for h in history)))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.stackplot(range(1, len(history) + 1), tiers, labels=[f"tier {t}" for t in range(len(tiers))])
    ax.set_xlabel("iteration")
    ax.set_ylabel("prompts")
    ax.set_title("rlcs: difficulty tiers (0 = easiest)")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/tier_histogram.png")
    plt.close(fig)


def _checkpoint_logger(ctx: StageContext, model, processor):
    """`on_checkpoint` for the training loop: each checkpoint's weights become an MLflow
    LoggedModel of the stage run (name `<stage>-step-<N>`, the step's loss as its metric), so a
    reviewer can pick up any intermediate model after the local checkpoint files are gone."""

    def log_checkpoint(step: int, loss: float) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            save_model(model, processor, tmp)
            _log_model_folder(ctx, f"{ctx.stage}-step-{step}", tmp,
                              {"thinkpipe.stage": ctx.stage, "thinkpipe.step": str(step)}, {"loss": loss}, step)

    return log_checkpoint


def _log_model_folder(ctx: StageContext, name: str, folder: str | Path, tags: dict[str, str],
                      metrics: dict[str, float] | None = None, step: int | None = None):
    """`folder` as a READY MLflow LoggedModel of the stage run (with `metrics` at `step`)."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    logged = mlflow.initialize_logged_model(name=name, source_run_id=ctx.run_id, tags=tags,
                                            experiment_id=ctx.lineage.experiment_id)
    mlflow.MlflowClient().log_model_artifacts(logged.model_id, str(folder))
    if metrics:
        mlflow.log_metrics(metrics, step=step, model_id=logged.model_id)
    mlflow.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged


def _pretrain_work(ctx: StageContext) -> dict[str, float]:
    from model_src.data.curate import read_split
    from model_src.model.build import build_model, build_processor, load_model_and_processor, train_tokenizer
    from model_src.model.inputs import pretrain_example
    from model_src.train.supervised import seed_everything, train_supervised

    rows = read_split(ctx.inputs["pretrain_data"])
    seed_everything(ctx.cfg.seed)
    if ctx.cfg.model.init_from:
        model, processor = load_model_and_processor(ctx.cfg.model.init_from)
        ctx.set_result("thinkpipe.init_from", ctx.cfg.model.init_from)
    else:
        texts = [t for r in rows for t in (r["caption"], r["question"], r["reasoning"], r["answer"])]
        tokenizer = train_tokenizer(texts, ctx.cfg.tokenizer.vocab_size)
        processor = build_processor(tokenizer, ctx.cfg.model)
        model = build_model(ctx.cfg.model, tokenizer, ctx.cfg.seed)
    summary: dict[str, float] = {"skipped": 1.0}
    if ctx.cfg.pretrain.num_steps > 0:
        examples = [pretrain_example(r) for r in rows]
        summary = train_supervised(model, processor, examples, ctx.cfg.pretrain, ctx.cfg.seed,
                                   lambda m, s: ctx.log_metrics(m, s), desc="pretrain",
                                   checkpoint_dir=ctx.checkpoint_dir, checkpoint_meta={"run_id": ctx.run_id},
                                   weights=[r["sample_weight"] for r in rows],
                                   on_checkpoint=_checkpoint_logger(ctx, model, processor))
        summary["num_examples"] = len(examples)
        if ctx.is_main:
            _loss_plot(ctx)
    if ctx.is_main:  # in a multi-process training job the other ranks only train
        save_model(model, processor, ctx.outputs["model"])
    return {**summary, "num_parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(processor.tokenizer)}


def pretrain_stage(*, config_json: str, lineage_path: str, pretrain_data: str, model_out: str,
                   use_cache: bool = True) -> dict[str, float]:
    """Learn the tokenizer, build Glm4v from the profile, train it to caption images. With
    `model.init_from`, start from released HF-format weights (local or S3) instead; with
    `pretrain.num_steps: 0` as well, the stage only hands those weights on."""

    return run_stage("pretrain", config_json=config_json, lineage_path=lineage_path,
                     inputs={"pretrain_data": pretrain_data}, outputs={"model": model_out},
                     config_sections=("seed", "tokenizer", "model", "pretrain"), work=_training_work("pretrain"), use_cache=use_cache,
                     system_metrics=True)


def _sft_work(ctx: StageContext) -> dict[str, float]:
    from model_src.data.curate import read_split
    from model_src.data.sft_filter import REJECTION_REASONS, filter_sft_rows
    from model_src.model.inputs import sft_example
    from model_src.train.supervised import train_supervised

    model, processor = _load(ctx.inputs["base_model"])
    rows, rejected = filter_sft_rows(read_split(ctx.inputs["sft_data"]))
    ctx.log_metrics({"rows_rejected": sum(rejected.values()),
                     **{f"rejected/{reason}": rejected[reason] for reason in REJECTION_REASONS}})
    examples = [sft_example(processor, r) for r in rows]
    summary = train_supervised(model, processor, examples, ctx.cfg.sft, ctx.cfg.seed + 1,
                               lambda m, s: ctx.log_metrics(m, s), desc="sft",
                               checkpoint_dir=ctx.checkpoint_dir, checkpoint_meta={"run_id": ctx.run_id},
                               weights=[r["sample_weight"] for r in rows],
                               on_checkpoint=_checkpoint_logger(ctx, model, processor))
    if ctx.is_main:
        _loss_plot(ctx)
        save_model(model, processor, ctx.outputs["model"])
    return {**summary, "num_examples": len(examples), "rows_rejected": sum(rejected.values())}


def sft_stage(*, config_json: str, lineage_path: str, sft_data: str, base_model: str, model_out: str,
              use_cache: bool = True) -> dict[str, float]:
    """Long-CoT SFT from the pretrained model; loss on assistant tokens only."""

    return run_stage("sft", config_json=config_json, lineage_path=lineage_path,
                     inputs={"sft_data": sft_data, "base_model": base_model}, outputs={"model": model_out},
                     config_sections=("seed", "sft"), work=_training_work("sft"), use_cache=use_cache,
                     system_metrics=True)


def _rlcs_work(ctx: StageContext) -> dict[str, float]:
    from model_src.data.curate import read_split
    from contextlib import closing

    import mlflow

    from model_src.rl.loop import train_grpo
    from model_src.rl.rollout import make_engine

    model, processor = _load(ctx.inputs["sft_model"])
    # transformers `generate`, or vLLM where it is installed (rlcs.rollout_engine)
    with closing(make_engine(ctx.cfg.rlcs, model, processor, ctx.cfg.seed + 2)) as engine:
        summary, curriculum = train_grpo(model, processor, read_split(ctx.inputs["rl_data"]), ctx.cfg.rlcs,
                                         ctx.cfg.seed + 2, lambda m, s: ctx.log_metrics(m, s),
                                         checkpoint_dir=ctx.checkpoint_dir, checkpoint_meta={"run_id": ctx.run_id},
                                         engine=engine)
    if ctx.is_main:
        _loss_plot(ctx, "reward_mean")
        _tier_plot(curriculum.history)
        mlflow.log_dict(curriculum.state_dict(), "curriculum_state.json")
        save_model(model, processor, ctx.outputs["model"])
    return summary


TRAINING_WORK = {"pretrain": _pretrain_work, "sft": _sft_work, "rlcs": _rlcs_work}


def _training_work(stage: str):
    """The stage's training, in this process, or (cluster profile) as a PyTorchJob across the
    requested nodes and GPUs that runs the same function (model_src/cluster/training_job.py)."""

    def work(ctx: StageContext) -> dict[str, float]:
        if ctx.cfg.cluster.training_job.enabled:
            from model_src.cluster.training_job import run_training_job

            return run_training_job(ctx)
        return TRAINING_WORK[stage](ctx)

    return work


def rlcs_stage(*, config_json: str, lineage_path: str, rl_data: str, sft_model: str, model_out: str,
               use_cache: bool = True) -> dict[str, float]:
    """GRPO on the RL prompts from the SFT model."""

    return run_stage("rlcs", config_json=config_json, lineage_path=lineage_path,
                     inputs={"rl_data": rl_data, "sft_model": sft_model}, outputs={"model": model_out},
                     config_sections=("seed", "rlcs"), work=_training_work("rlcs"), use_cache=use_cache,
                     system_metrics=True)


# ---------------------------------------------------------------------------------- evaluation
def evaluate_stage(*, config_json: str, lineage_path: str, eval_data: str, model: str, report_out: str,
                   pretrain_model: str = "", sft_model: str = "", use_cache: bool = True) -> dict[str, float]:
    """Greedy (and sampled pass@k) accuracy per domain on the held-out split; `report_out/eval.json`
    holds every sample. The pretrained and SFT checkpoints, when given, are scored on the first
    `checkpoint_samples_per_domain` samples per domain, next to the final model on the same ones."""

    def work(ctx: StageContext) -> dict[str, float]:
        import dataclasses

        import mlflow

        from model_src.data.curate import read_split
        from model_src.eval.evaluate import (accuracy_plot, domain_table, evaluate_model, stage_gain_plot,
                                             subset_accuracy, worst_examples_html)

        cfg = ctx.cfg.evaluate
        loaded, processor = _load(ctx.inputs["model"])
        rows = read_split(ctx.inputs["eval_data"])
        metrics, records = evaluate_model(loaded, processor, rows, cfg)
        out = ctx.outputs["report"]
        stages = [name for name in ("pretrain", "sft") if name in ctx.inputs]
        if stages and cfg.checkpoint_samples_per_domain:
            # the selection is deterministic, so the first n per domain are the same rows for all
            few = dataclasses.replace(cfg, max_samples_per_domain=cfg.checkpoint_samples_per_domain, pass_k=0)
            ids: set[str] = set()
            for name in stages:
                checkpoint, checkpoint_processor = _load(ctx.inputs[name])
                _, checkpoint_records = evaluate_model(checkpoint, checkpoint_processor, rows, few)
                ids = {r["id"] for r in checkpoint_records}
                metrics.update(subset_accuracy(checkpoint_records, ids, name))
            metrics.update(subset_accuracy(records, ids, "rlcs"))
            stage_gain_plot(metrics, [*stages, "rlcs"], out / "accuracy_by_stage.png")
            mlflow.log_artifact(str(out / "accuracy_by_stage.png"), "plots")
        report = {"metrics": metrics, "eval_data_hash": hash_path(ctx.inputs["eval_data"]), "samples": records}
        (out / "eval.json").write_text(json.dumps(report, indent=2))
        accuracy_plot(metrics, out / "accuracy_by_domain.png", "held-out accuracy per domain")
        (out / "worst_examples.html").write_text(worst_examples_html(records, rows, cfg.worst_examples))
        table = domain_table(metrics)
        mlflow.log_table({k: [row.get(k) for row in table] for k in table[0]}, "eval_by_domain.json")
        mlflow.log_table({k: [r[k] for r in records] for k in records[0]}, "eval_samples.json")
        mlflow.log_artifact(str(out / "accuracy_by_domain.png"), "plots")
        mlflow.log_artifact(str(out / "worst_examples.html"))
        return metrics

    inputs = {"eval_data": eval_data, "model": model}
    inputs.update({name: path for name, path in (("pretrain", pretrain_model), ("sft", sft_model)) if path})
    return run_stage("evaluate", config_json=config_json, lineage_path=lineage_path,
                     inputs=inputs, outputs={"report": report_out},
                     config_sections=("seed", "evaluate"), work=work, use_cache=use_cache)


# -------------------------------------------------------------------------------------- export
def _model_card(lineage: Lineage, metrics: dict[str, float], name: str) -> str:
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))
    return (f"# {name}\n\nA GLM-4.1V-style vision-language model trained by thinkpipe.\n\n"
            f"## Lineage\n\n| what | value |\n|---|---|\n| git commit | `{lineage.git_commit}` |\n"
            f"| data hash (DVC) | `{lineage.data_hash}` |\n| data rev | `{lineage.data_rev}` |\n"
            f"| config hash | `{lineage.config_hash}` |\n| image | `{lineage.image}` |\n"
            f"| MLflow parent run | `{lineage.parent_run_id}` |\n\n"
            f"## Evaluation\n\n| metric | value |\n|---|---|\n{rows}\n")


def smoke_generate(folder: str | Path, image, question: str, max_new_tokens: int = 16) -> str:
    """Reload an exported folder with the Auto classes and answer one question about `image`."""
    from model_src.model.generate import generate
    from model_src.model.inputs import Example, chat_prompt

    model, processor = _load(folder)
    row = {"images": [b""], "question": question}
    example = Example("smoke", "smoke", (image,), chat_prompt(processor, row), "", "")
    return generate(model, processor, [example], max_new_tokens=max_new_tokens, do_sample=False).texts[0]


def _promote(client, name: str, version: str, metrics: dict[str, float], eval_data: str,
             tolerance: float) -> tuple[bool, str]:
    """Alias the new version `candidate`, and `champion` when the promotion gate lets it."""
    from mlflow.exceptions import MlflowException

    from model_src.eval.promotion import decide_promotion

    try:
        current = client.get_model_version_by_alias(name, "champion")
    except MlflowException:  # no champion alias yet
        current = None
    champion = None if current is None else {
        k[len("thinkpipe.eval."):]: float(v) for k, v in current.tags.items() if k.startswith("thinkpipe.eval.")}
    promoted, reason = decide_promotion(metrics, champion, eval_data,
                                        None if current is None else current.tags.get("thinkpipe.eval_data_hash"),
                                        tolerance)
    client.set_registered_model_alias(name, "candidate", version)
    if promoted:
        client.set_registered_model_alias(name, "champion", version)
    client.set_model_version_tag(name, version, "thinkpipe.promotion", f"{'champion' if promoted else 'candidate'}: {reason}")
    return promoted, reason


def export_stage(*, config_json: str, lineage_path: str, model: str, eval_report: str, export_out: str,
                 use_cache: bool = True) -> dict[str, float]:
    """HF folder (safetensors, processor, chat template, model card), reload check, MLflow
    LoggedModel registered under `export.registered_model_name` with lineage tags. Closes the
    pipeline's parent run."""

    def work(ctx: StageContext) -> dict[str, float]:
        import tempfile

        import mlflow
        from PIL import Image

        from model_src.lineage_report import lineage_report

        out = ctx.outputs["exported"]
        shutil.copytree(ctx.inputs["model"], out, dirs_exist_ok=True)
        report = json.loads((ctx.inputs["eval_report"] / "eval.json").read_text())
        eval_metrics = report["metrics"]
        name = ctx.cfg.export.registered_model_name
        (out / MODEL_CARD).write_text(_model_card(ctx.lineage, eval_metrics, name))
        reply = smoke_generate(out, Image.new("RGB", (56, 56), (255, 255, 255)), "Which digit is written in the image?")
        client = mlflow.MlflowClient()
        tags = {**ctx.lineage.tags(), "thinkpipe.export_run_id": ctx.run_id}
        if ctx.cfg.export.s3_uri:  # one prefix per export run, so versions never overwrite each other
            from model_src.storage import upload_s3

            destination = f"{ctx.cfg.export.s3_uri.rstrip('/')}/{name}/{ctx.run_id}"
            mlflow.log_dict(upload_s3(out, destination), "s3_upload.json")  # key -> sha256
            tags["thinkpipe.export.s3_uri"] = destination
            ctx.set_result("s3_uri", destination)
        logged = _log_model_folder(ctx, name, out, tags)
        version = mlflow.register_model(f"models:/{logged.model_id}", name, tags={
            **tags, "thinkpipe.eval_data_hash": report["eval_data_hash"],
            **{f"thinkpipe.eval.{k}": str(v) for k, v in eval_metrics.items()}})
        promoted, reason = _promote(client, name, version.version, eval_metrics, report["eval_data_hash"],
                                    ctx.cfg.export.promotion_tolerance)
        print(f"export: {name} version {version.version} {'is the new champion' if promoted else 'stays candidate'}: "
              f"{reason}", flush=True)
        ctx.set_result("registered_model", name)
        ctx.set_result("model_version", version.version)
        ctx.set_result("promoted", str(promoted).lower())
        ctx.set_result("promotion_reason", reason)
        mlflow.log_text(reply, "smoke_reply.txt")
        # the reviewer's lineage report travels with the model: on the LoggedModel and the version
        report = lineage_report(f"{name}/{version.version}", client)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "lineage.json").write_text(json.dumps(report, indent=2))
            client.log_model_artifacts(logged.model_id, tmp)
        mlflow.log_dict(report, "lineage.json")
        client.set_model_version_tag(name, version.version, "thinkpipe.lineage_report", f"runs:/{ctx.run_id}/lineage.json")
        return {"exported_files": float(sum(1 for p in out.rglob("*") if p.is_file())),
                "accuracy_mean": eval_metrics.get("accuracy_mean", 0.0)}

    return run_stage("export", config_json=config_json, lineage_path=lineage_path,
                     inputs={"model": model, "eval_report": eval_report}, outputs={"exported": export_out},
                     config_sections=("export",), work=work, use_cache=use_cache, finish_parent=True)
