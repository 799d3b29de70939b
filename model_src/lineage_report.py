"""The reviewer's lineage report: from a registered model version back to the data, stage by stage.

`thinkpipe lineage NAME[/VERSION|@alias] [--json]` prints it; the export stage attaches the same
report (as JSON) to the model version it registers, so the lineage travels with the model.
"""

from __future__ import annotations

from model_src.eval.evaluate import domain_table
from model_src.names import (CACHE_KEY_TAG, CACHED_FROM_TAG, CONFIG_HASH_TAG, DATA_HASH_TAG, DATA_REV_TAG,
                             EXPORT_RUN_TAG, GIT_COMMIT_TAG, IMAGE_TAG, INPUT_TAG_PREFIX, OUTPUT_TAG_PREFIX,
                             PROMOTION_FIGURE_PREFIX, PROMOTION_TAG, REUSED_TAG_PREFIX, STAGE_TAG, TAG_PREFIX,
                             TAKEN_OVER_BY_TAG)
from model_src.stages.registry import STAGE_NAMES

LINEAGE_KEYS = ["git_commit", "data_hash", "data_rev", "config_hash", "image"]
# a stage reused by KFP was computed by a run with the same lineage value: these tags
SAME_LINEAGE_TAGS = (GIT_COMMIT_TAG, DATA_HASH_TAG, DATA_REV_TAG, CONFIG_HASH_TAG, IMAGE_TAG)


def resolve_version(client, ref: str):
    """NAME, NAME/VERSION or NAME@alias -> ModelVersion (NAME alone: the newest version)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        return client.get_model_version(name, version)
    versions = client.search_model_versions(f"name = '{ref}'", order_by=["version_number DESC"], max_results=1)
    if not versions:
        raise LookupError(f"no registered versions of model '{ref}'")
    return versions[0]


def _tagged(run, prefix: str) -> set[str]:
    return {v for k, v in run.data.tags.items() if k.startswith(prefix)}


def reused_stage_runs(client, parent, children: list | None = None) -> dict:
    """{stage: run} for the stages of a pipeline run that opened no run of their own because KFP
    reused their outputs. Walking downstream first, the run of a missing stage is the FINISHED run
    of that stage whose output hash is an input of a stage that did run; failing that (every later
    stage was reused too), the newest one with this pipeline run's lineage (KFP reuses only outputs
    made from the same lineage value)."""
    experiment_id = parent.info.experiment_id
    if children is None:
        children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    present = {r.data.tags.get(STAGE_TAG) for r in children}
    wanted = set().union(*(_tagged(r, INPUT_TAG_PREFIX) for r in children)) if children else set()
    same_lineage = " AND ".join(f"tags.`{tag}` = '{parent.data.tags.get(tag, '')}'" for tag in SAME_LINEAGE_TAGS)
    found = {}
    for stage in reversed(STAGE_NAMES[1:]):  # downstream first; init always runs
        if stage in present:
            continue
        runs = client.search_runs([experiment_id], f"tags.`{STAGE_TAG}` = '{stage}' AND attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=50)
        run = next((r for r in runs if _tagged(r, OUTPUT_TAG_PREFIX) & wanted), None)
        if run is None:
            run = next(iter(client.search_runs(
                [experiment_id], f"tags.`{STAGE_TAG}` = '{stage}' AND attributes.status = 'FINISHED' AND {same_lineage}",
                order_by=["attributes.start_time DESC"], max_results=1)), None)
        if run is not None:
            found[stage] = run
            wanted |= _tagged(run, INPUT_TAG_PREFIX)
    return found


def stage_runs(client, parent) -> list:
    """The stage runs of one pipeline run in stage order: its own, and the runs whose outputs it
    reused (recorded on the parent by the finish step; found again for runs recorded before it)."""
    experiment_id = parent.info.experiment_id
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    recorded = {k[len(REUSED_TAG_PREFIX):]: v for k, v in parent.data.tags.items() if k.startswith(REUSED_TAG_PREFIX)}
    if recorded:
        children += [client.get_run(run_id) for run_id in recorded.values()]
    else:
        children += list(reused_stage_runs(client, parent, children).values())
    order = {stage: i for i, stage in enumerate(STAGE_NAMES)}
    return sorted(children, key=lambda r: (order.get(r.data.tags.get(STAGE_TAG), len(order)), r.info.start_time))


def lineage_report(ref: str, client=None) -> dict:
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    version = resolve_version(client, ref)
    export_run = client.get_run(version.tags.get(EXPORT_RUN_TAG) or version.run_id)
    parent_id = export_run.data.tags["mlflow.parentRunId"]
    parent = client.get_run(parent_id)
    children = stage_runs(client, parent)
    stages = []
    for run in children:
        tags = run.data.tags
        stages.append({
            "stage": tags.get(STAGE_TAG, run.info.run_name),
            "run_id": run.info.run_id,
            "status": run.info.status,
            "cache_key": tags.get(CACHE_KEY_TAG, ""),
            "cached_from": tags.get(CACHED_FROM_TAG, ""),
            # this pipeline run did not run the stage: KFP reused the outputs of this run
            "reused": tags.get("mlflow.parentRunId") != parent_id,
            "params": dict(sorted(run.data.params.items())),
            "metrics": dict(sorted(run.data.metrics.items())),
            "inputs": {k[len(INPUT_TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(INPUT_TAG_PREFIX)},
            "outputs": {k[len(OUTPUT_TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(OUTPUT_TAG_PREFIX)},
        })
    evaluate = next((s for s in stages if s["stage"] == "evaluate"), None)
    return {
        "model": version.name,
        "version": str(version.version),
        "aliases": list(getattr(version, "aliases", []) or []),
        "promotion": version.tags.get(PROMOTION_TAG, ""),
        # the paired comparison the gate read (model_src/eval/promotion.py): rule, means, gain, SE, per domain
        "promotion_figures": {k[len(PROMOTION_FIGURE_PREFIX):]: v for k, v in sorted(version.tags.items())
                              if k.startswith(PROMOTION_FIGURE_PREFIX)},
        "pipeline_run": {"run_id": parent_id, "name": parent.info.run_name, "status": parent.info.status,
                         "taken_over_by": parent.data.tags.get(TAKEN_OVER_BY_TAG, "")},
        "lineage": {key: parent.data.tags.get(f"{TAG_PREFIX}{key}", "") for key in LINEAGE_KEYS},
        "eval_table": domain_table(evaluate["metrics"]) if evaluate else [],
        "stages": stages,
    }



KEY_METRICS = ("final_loss", "first_loss", "kept_rows", "quarantined_rows", "final_reward_mean",
               "accuracy_mean", "visual_gain_mean", "format_ok_mean")


def promotion_lines(figures: dict[str, str]) -> list[str]:
    """The gate's figures, per domain with both models' 95% Wilson intervals.

    >>> promotion_lines({"rule": "superior", "champion_mean": "0.2", "challenger_mean": "0.5", "gain": "0.3",
    ...                  "gain_se": "0.1", "gain_low95": "0.104", "prompts/ocr": "10", "champion/ocr": "0.2",
    ...                  "champion_ci_low/ocr": "0.057", "champion_ci_high/ocr": "0.51", "challenger/ocr": "0.5",
    ...                  "challenger_ci_low/ocr": "0.237", "challenger_ci_high/ocr": "0.763", "gain/ocr": "0.3",
    ...                  "gain_se/ocr": "0.1"})[1]
    '  ocr        10 prompts: champion 0.200 [0.057, 0.510] -> this 0.500 [0.237, 0.763], gain +0.300 (SE 0.100)'
    """
    if "gain" not in figures:
        return [f"  rule: {figures['rule']}"] if "rule" in figures else []
    f = {k: float(v) for k, v in figures.items() if k != "rule"}
    lines = [f"  rule {figures.get('rule', '?')}: champion {f['champion_mean']:.3f} -> this {f['challenger_mean']:.3f}, "
             f"paired gain {f['gain']:+.3f} (SE {f['gain_se']:.3f}, 95% lower bound {f['gain_low95']:+.3f})"
             + (f", {f['champion_trained_on']:.0f} eval prompts the champion trained on left out"
                if "champion_trained_on" in f else "")]
    for domain in sorted(k.split("/", 1)[1] for k in f if k.startswith("gain/")):
        lines.append(f"  {domain:<10} {f[f'prompts/{domain}']:.0f} prompts: champion {f[f'champion/{domain}']:.3f} "
                     f"[{f[f'champion_ci_low/{domain}']:.3f}, {f[f'champion_ci_high/{domain}']:.3f}] -> this "
                     f"{f[f'challenger/{domain}']:.3f} [{f[f'challenger_ci_low/{domain}']:.3f}, "
                     f"{f[f'challenger_ci_high/{domain}']:.3f}], gain {f[f'gain/{domain}']:+.3f} "
                     f"(SE {f[f'gain_se/{domain}']:.3f})")
    return lines


def render_lineage(report: dict) -> str:
    lines = [f"{report['model']} version {report['version']}"
             + (f" (aliases: {', '.join(report['aliases'])})" if report["aliases"] else ""),
             f"promotion: {report['promotion'] or 'n/a'}",
             f"pipeline run {report['pipeline_run']['name']} ({report['pipeline_run']['run_id']}) "
             f"{report['pipeline_run']['status']}"
             + (f" (its pipeline died; run {report['pipeline_run']['taken_over_by']} found it and closed it)"
                if report["pipeline_run"].get("taken_over_by") else "")]
    lines += promotion_lines(report.get("promotion_figures") or {})
    for key, value in report["lineage"].items():
        lines.append(f"  {key:<12} {value}")
    if report.get("eval_table"):
        lines.append("evaluation (held-out, per domain):")
        columns = [c for c in ("accuracy", "blind_accuracy", "visual_gain", "format_ok", "forced_answer")
                   if c in report["eval_table"][0]]
        lines.append("  " + f"{'domain':<10}" + "".join(f"{c:>14}" for c in columns))
        for row in report["eval_table"]:
            lines.append("  " + f"{row['domain']:<10}" + "".join(f"{row.get(c, float('nan')):>14.3f}" for c in columns))
    lines.append("stages (newest last):")
    for stage in report["stages"]:
        cached = f" cached from {stage['cached_from']}" if stage["cached_from"] else ""
        if stage.get("reused"):
            cached += " (reused by KFP's cache: this pipeline run did not run it)"
        lines.append(f"  {stage['stage']:<9} {stage['run_id']} {stage['status']}{cached}")
        metrics = {k: v for k, v in stage["metrics"].items() if k in KEY_METRICS or k.startswith(("accuracy/", "stage_gain"))}
        if metrics:
            lines.append("            metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        params = list(stage["params"].items())[:6]
        if params:
            lines.append("            params:  " + ", ".join(f"{k}={v}" for k, v in params))
        for name, digest in stage["inputs"].items():
            lines.append(f"            input  {name}: {digest[:16]}")
    return "\n".join(lines)
