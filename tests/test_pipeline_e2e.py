"""The whole DAG on the tiny profile through kfp.local, tracked in a real MLflow store.

Tests run in file order and share one tracking store: first run, unchanged re-run (cache),
failure + resume from the failed stage, and a --no-cache re-run that must reproduce the metrics.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT, THINKPIPE, TINY_MODEL

STAGES = ["init", "curate", "pretrain", "sft", "rlcs", "evaluate", "export"]
LINEAGE_TAGS = ["thinkpipe.git_commit", "thinkpipe.data_hash", "thinkpipe.config_hash", "thinkpipe.data_rev",
                "thinkpipe.image"]
TIMING_METRICS = {"stage_seconds", "train_seconds", "target_tokens_per_s", "tokens_per_s", "model_tflops"}


def _timing(metric: str) -> bool:
    return metric in TIMING_METRICS or metric.startswith("system/")


def _by_stage(children) -> dict:
    return {r.data.tags["thinkpipe.stage"]: r for r in children}


def test_first_run_records_parent_and_seven_finished_stage_runs(tiny, first_run):
    parent, children = tiny.runs_of("first")
    assert parent.info.status == "FINISHED"
    stages = _by_stage(children)
    assert sorted(stages) == sorted(STAGES) and len(children) == 7
    pinned = (ROOT / "data.dvc").read_text()
    for stage, run in stages.items():
        assert run.info.status == "FINISHED", stage
        for tag in LINEAGE_TAGS:
            assert run.data.tags.get(tag), f"{stage} lacks {tag}"
        assert run.data.tags["thinkpipe.data_hash"] in pinned
        assert run.data.tags["thinkpipe.config_hash"] == parent.data.tags["thinkpipe.config_hash"]
    # the model measurably learned during the supervised stages
    for stage in ("pretrain", "sft"):
        metrics = stages[stage].data.metrics
        assert metrics["final_loss"] < metrics["first_loss"] - 0.5, (stage, metrics)
    curate = stages["curate"].data.metrics
    assert curate["input_rows"] == curate["kept_rows"] + curate["quarantined_rows"]
    evaluation = stages["evaluate"].data.metrics
    assert "accuracy_mean" in evaluation
    # the earlier checkpoints are scored on the same samples, so the per-stage gain is visible
    for stage in ("pretrain", "sft", "rlcs"):
        assert 0.0 <= evaluation[f"accuracy_mean_{stage}"] <= 1.0
    plots = {a.path for a in tiny.client().list_artifacts(stages["evaluate"].info.run_id, "plots")}
    assert plots == {"plots/accuracy_by_domain.png", "plots/accuracy_by_stage.png"}


def test_exported_model_reloads_and_generates(first_run):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = Path(re.search(r"exported folder\s*:\s*(\S+)", first_run.output).group(1))
    for name in ("model.safetensors", "config.json", "generation_config.json", "processor_config.json",
                 "tokenizer.json", "chat_template.jinja", "README.md"):
        assert (folder / name).is_file(), name
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == "Glm4vForConditionalGeneration"
    assert processor.chat_template and "<|assistant|>" in processor.chat_template
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which digit?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[Image.new("RGB", (56, 56), "white")], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert "lineage" in (folder / "README.md").read_text().lower()


def test_lineage_prints_chain_for_registered_version(tiny, first_run):
    proc = subprocess.run([*THINKPIPE, "lineage", f"{TINY_MODEL}@champion", "--tracking-uri", tiny.tracking_uri],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"{TINY_MODEL} version 1 (aliases: " in proc.stdout and "champion: no champion yet" in proc.stdout
    parent, children = tiny.runs_of("first")
    text = proc.stdout
    assert parent.info.run_id in text
    for run in children:
        assert run.info.run_id in text
    for tag in ("git_commit", "data_hash", "data_rev", "config_hash", "image"):
        assert parent.data.tags[f"thinkpipe.{tag}"] in text
    assert "evaluation (held-out, per domain):" in text

    # --json, and the same report attached to the model version at export
    as_json = subprocess.run([*THINKPIPE, "lineage", f"{TINY_MODEL}/1", "--json", "--tracking-uri", tiny.tracking_uri],
                             cwd=ROOT, capture_output=True, text=True)
    report = json.loads(as_json.stdout)
    assert report["lineage"]["data_hash"] == parent.data.tags["thinkpipe.data_hash"]
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["pretrain"]["inputs"]["pretrain_data"] == _by_stage(children)["pretrain"].data.tags[
        "thinkpipe.input.pretrain_data"]  # upstream artifact hashes per stage
    assert {row["domain"] for row in report["eval_table"]} >= {"digits", "stem", "ocr"}
    client = tiny.client()
    version = client.get_model_version(TINY_MODEL, "1")
    import mlflow

    attached = json.loads(Path(mlflow.artifacts.download_artifacts(
        version.tags["thinkpipe.lineage_report"], tracking_uri=tiny.tracking_uri)).read_text())
    assert attached["lineage"] == report["lineage"] and attached["version"] == "1"
    assert [s["run_id"] for s in attached["stages"]] == [s["run_id"] for s in report["stages"]]
    model_files = Path(mlflow.artifacts.download_artifacts(f"models:/{TINY_MODEL}/1", tracking_uri=tiny.tracking_uri))
    assert json.loads((model_files / "lineage.json").read_text())["lineage"] == report["lineage"]  # with the weights


def test_unchanged_rerun_reuses_every_stage(tiny, first_run):
    again = tiny.run("again")
    assert again.returncode == 0, again.output[-5000:]
    parent, children = tiny.runs_of("again")
    first = _by_stage(tiny.runs_of("first")[1])
    stages = _by_stage(children)
    assert parent.info.status == "FINISHED"
    for stage in STAGES[1:]:
        assert stages[stage].data.tags.get("thinkpipe.cached_from") == first[stage].info.run_id, stage
        assert stages[stage].info.status == "FINISHED"
    assert again.seconds < first_run.seconds


def test_failed_stage_then_resume_redoes_only_failed_and_later_stages(tiny, first_run):
    changed = ("--set", "sft.lr=0.0015")  # invalidates sft and everything after it, not curate/pretrain
    failed = tiny.run("fails-at-sft", *changed, env={"THINKPIPE_FAULT_STAGE": "sft"})
    assert failed.returncode != 0
    assert "resumes at the failed stage" in failed.output
    parent, children = tiny.runs_of("fails-at-sft")
    stages = _by_stage(children)
    assert parent.info.status == "FAILED"
    assert stages["sft"].info.status == "FAILED"
    assert "rlcs" not in stages

    resumed = tiny.run("resumed", *changed)
    assert resumed.returncode == 0, resumed.output[-5000:]
    parent, children = tiny.runs_of("resumed")
    stages = _by_stage(children)
    assert parent.info.status == "FINISHED"
    for stage in ("curate", "pretrain"):
        assert stages[stage].data.tags.get("thinkpipe.cached_from"), f"{stage} should be reused"
    for stage in ("sft", "rlcs", "evaluate", "export"):
        assert not stages[stage].data.tags.get("thinkpipe.cached_from"), f"{stage} should be recomputed"
        assert stages[stage].info.status == "FINISHED"


def test_failed_quality_gate_stops_the_pipeline_before_training(tiny, first_run):
    # the committed corpus loses ~11% of stem rows to duplicates and eval leaks: over a 5% limit
    gated = tiny.run("gate-fails", "--set", "curate.max_quarantine_share=0.05")
    assert gated.returncode != 0
    assert "domain_mix: expect_column_values_to_be_between on column 'quarantine_share'" in gated.output
    parent, children = tiny.runs_of("gate-fails")
    stages = _by_stage(children)
    assert parent.info.status == "FAILED" and stages["curate"].info.status == "FAILED"
    assert "pretrain" not in stages
    failed_docs = {a.path for a in tiny.client().list_artifacts(stages["curate"].info.run_id, "failed_curation")}
    assert "failed_curation/quarantine.parquet" in failed_docs and "failed_curation/data_docs" in failed_docs


def test_same_seed_and_data_give_identical_metrics(tiny, first_run):
    """Also exports to an S3 server on 127.0.0.1: every uploaded object hashes like its file."""
    import hashlib

    from tests.s3_server import s3_server

    with s3_server("exports") as (s3_env, s3):
        repeat = tiny.run("repeat", "--no-cache", "--set", "export.s3_uri=s3://exports/thinkpipe", env=s3_env)
        assert repeat.returncode == 0, repeat.output[-5000:]
        folder = Path(re.search(r"exported folder\s*:\s*(\S+)", repeat.output).group(1))
        export_run = _by_stage(tiny.runs_of("repeat")[1])["export"]
        prefix = export_run.data.tags["thinkpipe.result.s3_uri"].removeprefix("s3://exports/")
        objects = s3.list_objects_v2(Bucket="exports", Prefix=prefix)["Contents"]
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert len(objects) == len(files) > 5
        for obj in objects:
            local = folder / obj["Key"].removeprefix(prefix + "/")
            body = s3.get_object(Bucket="exports", Key=obj["Key"])["Body"].read()
            assert hashlib.sha256(body).hexdigest() == hashlib.sha256(local.read_bytes()).hexdigest()
    # an equal model is registered but does not dethrone the champion
    client = tiny.client()
    newest = max(client.search_model_versions(f"name = '{TINY_MODEL}'"), key=lambda v: int(v.version))
    assert str(client.get_model_version_by_alias(TINY_MODEL, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(TINY_MODEL, "candidate").version) == str(newest.version) != "1"
    assert "does not beat the champion" in newest.tags["thinkpipe.promotion"]
    first = _by_stage(tiny.runs_of("first")[1])
    again = _by_stage(tiny.runs_of("repeat")[1])
    for stage in STAGES[1:]:
        assert not again[stage].data.tags.get("thinkpipe.cached_from"), stage
        ours = {k: v for k, v in again[stage].data.metrics.items() if not _timing(k)}
        theirs = {k: v for k, v in first[stage].data.metrics.items() if not _timing(k)}
        assert ours == theirs, stage
