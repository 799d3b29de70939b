"""The reviewer's lineage report: from a registered model version back to the data, stage by stage.

`thinkpipe lineage NAME[/VERSION|@alias] [--json]` prints it; the export stage attaches the same
report (as JSON) to the model version it registers, so the lineage travels with the model.
"""

from __future__ import annotations

from model_src.eval.evaluate import domain_table
from model_src.lineage import TAG_PREFIX

STAGE_ORDER = ["init", "curate", "pretrain", "sft", "rlcs", "evaluate", "export"]
LINEAGE_KEYS = ["git_commit", "data_hash", "data_rev", "config_hash", "image"]


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


def _reused_upstream(client, experiment_id: str, children: list) -> list:
    """Stages that did not run in this pipeline run because KFP reused their outputs (a cluster
    cache hit never starts the stage): the earlier FINISHED run of that stage whose output hash
    is what a stage of this run took as input."""
    present = {r.data.tags.get(f"{TAG_PREFIX}stage") for r in children}
    wanted = {v for r in children for k, v in r.data.tags.items() if k.startswith(f"{TAG_PREFIX}input.")}
    found = []
    for stage in [s for s in reversed(STAGE_ORDER) if s not in present and s != "init"]:  # downstream first
        for run in client.search_runs([experiment_id], f"tags.`{TAG_PREFIX}stage` = '{stage}' "
                                      f"AND attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                                      max_results=50):
            outputs = {v for k, v in run.data.tags.items() if k.startswith(f"{TAG_PREFIX}output.")}
            if outputs & wanted:
                found.append(run)
                wanted |= {v for k, v in run.data.tags.items() if k.startswith(f"{TAG_PREFIX}input.")}
                break
    return found


def lineage_report(ref: str, client=None) -> dict:
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    version = resolve_version(client, ref)
    export_run = client.get_run(version.tags.get(f"{TAG_PREFIX}export_run_id") or version.run_id)
    parent_id = export_run.data.tags["mlflow.parentRunId"]
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    children += _reused_upstream(client, parent.info.experiment_id, children)
    order = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    children.sort(key=lambda r: (order.get(r.data.tags.get(f"{TAG_PREFIX}stage"), len(order)), r.info.start_time))
    stages = []
    for run in children:
        tags = run.data.tags
        stages.append({
            "stage": tags.get(f"{TAG_PREFIX}stage", run.info.run_name),
            "run_id": run.info.run_id,
            "status": run.info.status,
            "cache_key": tags.get(f"{TAG_PREFIX}cache_key", ""),
            "cached_from": tags.get(f"{TAG_PREFIX}cached_from", ""),
            "params": dict(sorted(run.data.params.items())),
            "metrics": dict(sorted(run.data.metrics.items())),
            "inputs": {k[len(TAG_PREFIX) + 6:]: v for k, v in tags.items() if k.startswith(f"{TAG_PREFIX}input.")},
            "outputs": {k[len(TAG_PREFIX) + 7:]: v for k, v in tags.items() if k.startswith(f"{TAG_PREFIX}output.")},
        })
    evaluate = next((s for s in stages if s["stage"] == "evaluate"), None)
    return {
        "model": version.name,
        "version": str(version.version),
        "aliases": list(getattr(version, "aliases", []) or []),
        "promotion": version.tags.get(f"{TAG_PREFIX}promotion", ""),
        "pipeline_run": {"run_id": parent_id, "name": parent.info.run_name, "status": parent.info.status},
        "lineage": {key: parent.data.tags.get(f"{TAG_PREFIX}{key}", "") for key in LINEAGE_KEYS},
        "eval_table": domain_table(evaluate["metrics"]) if evaluate else [],
        "stages": stages,
    }



KEY_METRICS = ("final_loss", "first_loss", "kept_rows", "quarantined_rows", "final_reward_mean",
               "accuracy_mean", "format_ok_mean")


def render_lineage(report: dict) -> str:
    lines = [f"{report['model']} version {report['version']}"
             + (f" (aliases: {', '.join(report['aliases'])})" if report["aliases"] else ""),
             f"promotion: {report['promotion'] or 'n/a'}",
             f"pipeline run {report['pipeline_run']['name']} ({report['pipeline_run']['run_id']}) "
             f"{report['pipeline_run']['status']}"]
    for key, value in report["lineage"].items():
        lines.append(f"  {key:<12} {value}")
    if report.get("eval_table"):
        lines.append("evaluation (held-out, per domain):")
        columns = [c for c in ("accuracy", "format_ok", "forced_answer") if c in report["eval_table"][0]]
        lines.append("  " + f"{'domain':<10}" + "".join(f"{c:>14}" for c in columns))
        for row in report["eval_table"]:
            lines.append("  " + f"{row['domain']:<10}" + "".join(f"{row.get(c, float('nan')):>14.3f}" for c in columns))
    lines.append("stages (newest last):")
    for stage in report["stages"]:
        cached = f" cached from {stage['cached_from']}" if stage["cached_from"] else ""
        lines.append(f"  {stage['stage']:<9} {stage['run_id']} {stage['status']}{cached}")
        metrics = {k: v for k, v in stage["metrics"].items() if k in KEY_METRICS or k.startswith("accuracy/")}
        if metrics:
            lines.append("            metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        params = list(stage["params"].items())[:6]
        if params:
            lines.append("            params:  " + ", ".join(f"{k}={v}" for k, v in params))
        for name, digest in stage["inputs"].items():
            lines.append(f"            input  {name}: {digest[:16]}")
    return "\n".join(lines)
