"""export: the model as a Hugging Face folder, registered in MLflow behind a promotion gate.

Writes the HF folder (safetensors, processor, chat template) with a model card carrying the
lineage and the evaluation, reloads it with the Auto classes and answers one question (a smoke
test), optionally uploads it to S3, logs it as an MLflow LoggedModel and registers it under
`export.registered_model_name` with lineage and evaluation tags. The new version becomes
`candidate`, and `champion` when the promotion gate lets it: paired per-prompt scores of this model
and the champion on this run's eval split (the evaluate stage scored both; model_src/eval/promotion.py
has the rules). The lineage report is attached to the version first; promotion is the stage's last
act, run by the runner after it has logged everything else, under a lock (a Lease on a cluster), so a
failure before it leaves the champion as it was and two exports at once agree on one champion.
The same weights are registered once: a second export of them names the existing version.
Not in the paper, which releases its weights by hand.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from model_src.lineage import Lineage
from model_src.names import (EVAL_DATA_HASH_TAG, EVAL_TAG_PREFIX, EXPORT_RUN_TAG, EXPORT_S3_TAG,
                             LINEAGE_REPORT_TAG, MODEL_CONTENT_TAG, PROMOTION_TAG)
from model_src.stages.models import device_policy, load_model, log_model_folder
from model_src.stages.runner import StageContext, run_stage

MODEL_CARD = "README.md"
SMOKE_QUESTION = "Which digit is written in the image?"


def smoke_generate(folder: str | Path, image, question: str, max_new_tokens: int = 16, policy=None) -> str:
    """Reload an exported folder with the Auto classes and answer one question about `image`
    (on `policy`'s device and precision when given)."""
    from contextlib import nullcontext

    from model_src.model.generate import generate
    from model_src.model.inputs import Example, chat_prompt

    model, processor = load_model(folder, policy)
    row = {"images": [b""], "question": question}
    example = Example("smoke", "smoke", (image,), chat_prompt(processor, row), "", "")
    with policy.autocast() if policy is not None else nullcontext():
        return generate(model, processor, [example], max_new_tokens=max_new_tokens, do_sample=False).texts[0]


def _attach_lineage_report(ctx: StageContext, client, name: str, version: str, model_id: str) -> None:
    """The reviewer's lineage report travels with the model: on the LoggedModel and the version."""
    import mlflow

    from model_src.lineage_report import lineage_report

    report = lineage_report(f"{name}/{version}", client)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lineage.json").write_text(json.dumps(report, indent=2))
        client.log_model_artifacts(model_id, tmp)
    mlflow.log_dict(report, "lineage.json")
    client.set_model_version_tag(name, version, LINEAGE_REPORT_TAG, f"runs:/{ctx.run_id}/lineage.json")


def work(ctx: StageContext) -> dict[str, float]:
    import mlflow
    from PIL import Image

    from model_src.model_registry import model_card, version_with_content

    out = ctx.outputs["exported"]
    shutil.copytree(ctx.inputs["model"], out, dirs_exist_ok=True)
    report = json.loads((ctx.inputs["eval_report"] / "eval.json").read_text())
    eval_metrics = report["metrics"]
    name = ctx.cfg.export.registered_model_name
    (out / MODEL_CARD).write_text(model_card(ctx.lineage, ctx.scope, eval_metrics, name))
    reply = smoke_generate(out, Image.new("RGB", (56, 56), (255, 255, 255)), SMOKE_QUESTION,
                           policy=device_policy(ctx))
    mlflow.log_text(reply, "smoke_reply.txt")
    client = mlflow.MlflowClient()
    content_hash = ctx.input_hash("model")  # the runner hashed it for the content key already
    ctx.set_result("registered_model", name)
    summary = {"exported_files": float(sum(1 for p in out.rglob("*") if p.is_file())),
               "accuracy_mean": eval_metrics.get("accuracy_mean", 0.0)}
    existing = version_with_content(client, name, content_hash)
    if existing is not None and PROMOTION_TAG in existing.tags:  # registered and decided: name it, do nothing
        reason = f"unchanged model: its weights are version {existing.version}'s"
        print(f"export: {name} {reason}; nothing registered", flush=True)
        ctx.set_result("model_version", existing.version)
        ctx.set_result("promoted", "false")
        ctx.set_result("promotion_reason", reason)
        return summary
    if existing is not None:  # an export of these weights died before its decision: this one decides it
        print(f"export: {name} version {existing.version} holds these weights but was never decided on: "
              f"deciding it now", flush=True)
        ctx.set_result("model_version", existing.version)
        ctx.last_act = _promotion(ctx, client, name, existing.version, report, eval_metrics)
        return summary
    tags = {**ctx.lineage.tags(), **ctx.scope.tags(), EXPORT_RUN_TAG: ctx.run_id, MODEL_CONTENT_TAG: content_hash}
    if ctx.cfg.export.s3_uri:  # one prefix per export run, so versions never overwrite each other
        from model_src.storage import upload_s3

        destination = f"{ctx.cfg.export.s3_uri.rstrip('/')}/{name}/{ctx.run_id}"
        mlflow.log_dict(upload_s3(out, destination), "s3_upload.json")  # key -> sha256
        tags[EXPORT_S3_TAG] = destination
        ctx.set_result("s3_uri", destination)
    logged = log_model_folder(ctx, name, out, tags)
    version = mlflow.register_model(f"models:/{logged.model_id}", name, tags={
        **tags, EVAL_DATA_HASH_TAG: report["eval_data_hash"],
        **{f"{EVAL_TAG_PREFIX}{k}": str(v) for k, v in eval_metrics.items()}}).version
    # the lineage report first, the promotion last: a failure in between leaves the champion as it was
    _attach_lineage_report(ctx, client, name, version, logged.model_id)
    ctx.set_result("model_version", version)
    ctx.last_act = _promotion(ctx, client, name, version, report, eval_metrics)  # after everything that can fail
    return summary


def _promotion(ctx: StageContext, client, name: str, version: str, report: dict, eval_metrics: dict):
    """The export's last act: the gate's decision on `version`, its card, then the aliases."""
    import mlflow

    from model_src.model_registry import model_card, promote, promotion_table
    from model_src.names import result_tag

    def describe(decision) -> None:
        # what a reviewer reads on the version's page in the MLflow UI: the card, with the decision
        client.update_model_version(name, version, description=model_card(
            ctx.lineage, ctx.scope, eval_metrics, name, promotion_table(decision)))
        mlflow.set_tags({result_tag("promoted"): str(decision.promoted).lower(),
                         result_tag("promotion_reason"): decision.reason[:5000]})

    def act() -> None:
        decision = promote(client, name, version, report, ctx.cfg.export, holder=ctx.run_id, before_aliases=describe)
        print(f"export: {name} version {version} {'is the new champion' if decision.promoted else 'stays candidate'}: "
              f"{decision.reason}", flush=True)

    return act


def run(*, lineage: str | Lineage, model: str, eval_report: str, export_out: str,
        use_cache: bool = True) -> dict[str, float]:
    return run_stage("export", lineage=lineage, inputs={"model": model, "eval_report": eval_report},
                     outputs={"exported": export_out}, work=work, use_cache=use_cache)
