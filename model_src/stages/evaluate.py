"""evaluate: held-out accuracy per domain, scored by the same verifiers that reward RL.

Greedy pass@1 (and sampled pass@k with `evaluate.pass_k`) on the curated eval split; the
pretrained and SFT checkpoints are scored too, on the first `checkpoint_samples_per_domain`
samples per domain (all of them in `small`), next to the final model on the same samples, so each
stage's gain shows: `stage_gain_<stage>` with its paired standard error `stage_gain_se_<stage>`.
The paper evaluates on public benchmarks in eight areas (docs/recipe.md section 6); here the eval split
holds the generators' held-out rows of each domain. `report_out/eval.json` holds every sample.

On a cluster with `cluster.training_job` on, evaluation runs as a multi-process job like the
training stages (model_src/cluster/training_job.py): every process decodes its share of the
batches (model_src/eval/evaluate.py) and rank 0 writes the report and logs it.
"""

from __future__ import annotations

import json
from pathlib import Path

from model_src.config import derive
from model_src.lineage import Lineage
from model_src.stages.models import device_policy, load_model
from model_src.stages.runner import StageContext
from model_src.stages.training import run_training_stage

CHECKPOINT_INPUTS = ("pretrain", "sft")  # earlier checkpoints scored on the subset, in stage order
CHAMPION_FILE = "champion.json"


def work(ctx: StageContext) -> dict[str, float]:
    from model_src.data.schema import read_split
    from model_src.rewards.batch import Scorer

    policy = device_policy(ctx)
    loaded, processor = load_model(ctx.inputs["model"], policy)
    rows = read_split(ctx.inputs["eval_data"])
    # transformers `generate`, or vLLM (in-process or a rollout server) as evaluate.rollout_engine says;
    # the few-sample checkpoint comparisons below decode greedily with transformers (the same tokens)
    with Scorer.from_config(ctx.cfg.reward) as scorer:  # what RLCS scores with: worker processes, the judge if any
        return _evaluate(ctx, loaded, processor, rows, policy, scorer)


def score_champion(ctx: StageContext, challenger, challenger_records: list[dict], rows: list[dict], policy,
                   scorer) -> dict | None:
    """The registry's champion (the version this run was started against, the `champion` input)
    answering the same prompts with the same decoding settings: what the promotion gate compares
    the new model with, prompt by prompt. None when there is no champion."""
    import mlflow

    from model_src.data.curation.hashing import training_key
    from model_src.eval.evaluate import evaluate_model
    from model_src.eval.promotion import model_family
    from model_src.model_registry import training_keys
    from model_src.names import EVAL_DATA_HASH_TAG, MODEL_CONTENT_TAG
    from model_src.serving.models import version_folder

    if "champion" not in ctx.inputs:
        return None
    spec = json.loads((ctx.inputs["champion"] / CHAMPION_FILE).read_text())
    client = mlflow.MlflowClient()
    version = client.get_model_version(spec["name"], spec["version"])
    model, processor = load_model(version_folder(client, version, None), policy)
    family, ours = model_family(model.config), model_family(challenger.config)
    keys = training_keys(client, version)
    selected = {r["id"] for r in challenger_records}
    trained_on = None if keys is None else sorted(row["id"] for row in rows
                                                  if row["id"] in selected and training_key(row["images"]) in keys)
    if trained_on:
        print(f"evaluate: the champion (version {spec['version']}) trained on {len(trained_on)} of these eval prompts: "
              f"the promotion gate leaves them out", flush=True)
    out = {"name": spec["name"], "version": spec["version"], "family": family,
           "eval_data_hash": version.tags.get(EVAL_DATA_HASH_TAG, ""), "samples": [], "trained_on": trained_on}
    if family != ours:  # another architecture under the same name: the gate says why, nothing is decoded
        return out
    if version.tags.get(MODEL_CONTENT_TAG) == ctx.input_hash("model"):
        print(f"evaluate: the champion (version {spec['version']}) holds these very weights: its answers are "
              f"this model's", flush=True)
        out["samples"] = [dict(r) for r in challenger_records]
        return out
    plain = derive(ctx.cfg.evaluate, "evaluate", pass_k=0, blind_baseline=False)  # greedy pass@1, as the challenger's
    with policy.autocast():
        _, out["samples"] = evaluate_model(model, processor, rows, plain, scorer=scorer)
    return out


def inject_rewards(records: list[dict], which: str) -> None:
    """Fault drill (tests): replace rewards by id from $THINKPIPE_FAULT_EVAL_REWARDS[which] (`*`: every id)."""
    import os

    from model_src.names import EVAL_REWARDS_FAULT_ENV

    path = os.environ.get(EVAL_REWARDS_FAULT_ENV)
    if path:
        rewards = json.loads(Path(path).read_text()).get(which, {})
        for record in records:
            record["reward"] = float(rewards.get(record["id"], rewards.get("*", record["reward"])))


def _evaluate(ctx: StageContext, loaded, processor, rows: list[dict], policy, scorer) -> dict[str, float]:
    from contextlib import closing

    import mlflow

    from model_src.eval.evaluate import (accuracy_plot, domain_table, evaluate_model, paired_gain,
                                         stage_gain_plot, subset_accuracy, worst_examples_html)
    from model_src.eval.promotion import model_family
    from model_src.rl.rollout import make_engine

    cfg = ctx.cfg.evaluate
    with closing(make_engine(cfg, loaded, processor, ctx.cfg.seed)) as engine, policy.autocast():
        metrics, records = evaluate_model(loaded, processor, rows, cfg, engine=engine, scorer=scorer)
    inject_rewards(records, "challenger")
    champion = score_champion(ctx, loaded, records, rows, policy, scorer)
    if champion is not None:
        inject_rewards(champion["samples"], "champion")
    out = ctx.outputs["report"]
    stages = [name for name in CHECKPOINT_INPUTS if name in ctx.inputs]
    if stages and cfg.checkpoint_samples_per_domain:
        # the selection is deterministic, so the first n per domain are the same rows for all
        few = derive(cfg, "evaluate", max_samples_per_domain=cfg.checkpoint_samples_per_domain, pass_k=0,
                     blind_baseline=False)
        by_stage: dict[str, list[dict]] = {}
        for name in stages:
            checkpoint, checkpoint_processor = load_model(ctx.inputs[name], policy)
            with policy.autocast():
                _, by_stage[name] = evaluate_model(checkpoint, checkpoint_processor, rows, few, scorer=scorer)
        ids = {r["id"] for r in by_stage[stages[-1]]}
        by_stage["rlcs"] = [r for r in records if r["id"] in ids]
        for name, stage_records in by_stage.items():
            metrics.update(subset_accuracy(stage_records, ids, name))
        for earlier, later in zip(list(by_stage), list(by_stage)[1:]):  # what each stage added, +- a paired SE
            metrics.update(paired_gain(by_stage[earlier], by_stage[later], later))
        if ctx.is_main:
            stage_gain_plot(metrics, [*stages, "rlcs"], out / "accuracy_by_stage.png")
            mlflow.log_artifact(str(out / "accuracy_by_stage.png"), "plots")
    if not ctx.is_main:  # the other ranks of a job decoded their share; rank 0 reports
        return metrics
    report = {"metrics": metrics, "eval_data_hash": ctx.input_hash("eval_data"), "samples": records,
              "family": model_family(loaded.config), "champion": champion}
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    accuracy_plot(metrics, out / "accuracy_by_domain.png", "held-out accuracy per domain")
    (out / "worst_examples.html").write_text(worst_examples_html(records, rows, cfg.worst_examples))
    table = domain_table(metrics)
    mlflow.log_table({k: [row.get(k) for row in table] for k in table[0]}, "eval_by_domain.json")
    # a reviewer reads why each answer got its reward: the reason and the parts (format, accuracy, judge, ...)
    mlflow.log_table({k: [json.dumps(r[k]) if isinstance(r[k], dict) else r[k] for r in records] for k in records[0]},
                     "eval_samples.json")
    mlflow.log_artifact(str(out / "accuracy_by_domain.png"), "plots")
    mlflow.log_artifact(str(out / "worst_examples.html"))
    return metrics


def champion_input(name: str, version: str, folder: str | Path) -> str:
    """The champion a run compares with, as an input folder (`champion.json`): its hash enters the
    stage's content key, so no cached comparison outlives a change of champion."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / CHAMPION_FILE).write_text(json.dumps({"name": name, "version": str(version)}))
    return str(folder)


def run(*, lineage: str | Lineage, eval_data: str, model: str, report_out: str, pretrain_model: str = "",
        sft_model: str = "", champion_version: str = "", use_cache: bool = True) -> dict[str, float]:
    """`champion_version`: the registry version aliased `champion` when the run started ("" none)."""
    import tempfile

    value = lineage if isinstance(lineage, Lineage) else Lineage.from_json(lineage)
    inputs = {"eval_data": eval_data, "model": model}
    inputs.update({name: path for name, path in zip(CHECKPOINT_INPUTS, (pretrain_model, sft_model)) if path})
    with tempfile.TemporaryDirectory() as tmp:
        if champion_version:
            inputs["champion"] = champion_input(value.config.export.registered_model_name, champion_version, tmp)
        return run_training_stage("evaluate", lineage=value, inputs=inputs, outputs={"report": report_out},
                                  use_cache=use_cache)
