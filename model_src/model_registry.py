"""The MLflow model registry side of export: the model card, one version per model content, the
promotion gate's aliases.

A version is registered once per model content (the sha256 of the model folder the export stage
received): exporting the same weights again, e.g. an unchanged re-run with caching off, names the
existing version instead of registering an identical second one.
"""

from __future__ import annotations

from pathlib import Path

from model_src.lineage import Lineage, RunScope
from model_src.names import COMPARED_WITH_TAG, MODEL_CONTENT_TAG, PROMOTION_FIGURE_PREFIX, PROMOTION_TAG


def model_card(lineage: Lineage, scope: RunScope, metrics: dict[str, float], name: str, promotion: str = "") -> str:
    """The model card: lineage, a per-domain table (accuracy beside the image-blind baseline and the
    visual gain, so a model that answers from priors shows), the other metrics, the promotion
    decision. Export writes it beside the weights and makes it the registered version's description."""
    from model_src.eval.evaluate import domain_table

    columns = [c for c in ("accuracy", "blind_accuracy", "visual_gain", "format_ok", "pass_at_1")
               if any(c in row for row in domain_table(metrics))]
    table = domain_table({k: v for k, v in metrics.items() if k.split("/", 1)[0] in columns})
    per_domain = "\n".join(f"| {row['domain']} | " + " | ".join(f"{row.get(c, float('nan')):.3f}" for c in columns) + " |"
                           for row in table)
    overall = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()) if "/" not in k)
    gains = stage_gain_table(metrics)
    card = (f"# {name}\n\nA GLM-4.1V-style vision-language model trained by thinkpipe.\n\n"
            f"## Lineage\n\n| what | value |\n|---|---|\n| git commit | `{lineage.git_commit}` |\n"
            f"| data hash (DVC) | `{lineage.data_hash}` |\n| data rev | `{lineage.data_rev}` |\n"
            f"| config hash | `{lineage.config_hash}` |\n| image | `{lineage.image}` |\n"
            f"| MLflow parent run | `{scope.parent_run_id}` |\n\n"
            f"## Evaluation per domain\n\n| domain | {' | '.join(columns)} |\n|---|{'---|' * len(columns)}\n"
            f"{per_domain}\n\n{gains}## Overall\n\n| metric | value |\n|---|---|\n{overall}\n")
    return card + (f"\n## Promotion\n\n{promotion}\n" if promotion else "")


def stage_gain_table(metrics: dict[str, float]) -> str:
    """The card's "what each stage added" section (Markdown, empty without checkpoint scores): each
    stage's mean accuracy on the same held-out prompts and its paired gain over the stage before.

    >>> print(stage_gain_table({"accuracy_mean_sft": 0.3, "accuracy_mean_pretrain": 0.0,
    ...                         "stage_gain_sft": 0.3, "stage_gain_se_sft": 0.05}))
    ## What each stage added (same held-out prompts)
    <BLANKLINE>
    | stage | mean accuracy | gain over the stage before | paired SE | gain > 2 SE |
    |---|---|---|---|---|
    | pretrain | 0.000 | | | |
    | sft | 0.300 | +0.300 | 0.050 | yes |
    <BLANKLINE>
    <BLANKLINE>
    """
    order = ("pretrain", "sft", "rlcs")  # training order, whatever order the metrics come in
    stages = sorted((k.removeprefix("accuracy_mean_") for k in metrics if k.startswith("accuracy_mean_")),
                    key=lambda stage: order.index(stage) if stage in order else len(order))
    if not stages:
        return ""
    lines = ["## What each stage added (same held-out prompts)", "",
             "| stage | mean accuracy | gain over the stage before | paired SE | gain > 2 SE |", "|---|---|---|---|---|"]
    for stage in stages:
        gain, se = metrics.get(f"stage_gain_{stage}"), metrics.get(f"stage_gain_se_{stage}")
        tail = "| | | |" if gain is None else f"| {gain:+.3f} | {se:.3f} | {'yes' if gain > 2 * se else 'no'} |"
        lines.append(f"| {stage} | {metrics[f'accuracy_mean_{stage}']:.3f} {tail}")
    return "\n".join(lines) + "\n\n"


def version_with_content(client, name: str, content_hash: str):
    """The registered version of `name` whose model folder hashes to `content_hash`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")):
            return None
        raise
    same = [v for v in versions if v.tags.get(MODEL_CONTENT_TAG) == content_hash]
    return min(same, key=lambda v: int(v.version)) if same else None


def no_such_alias(exc) -> bool:
    """Whether an MlflowException says the model or the alias does not exist (the only errors that
    mean "no champion yet"; a registry that is down or refuses must not read as an empty one)."""
    code = str(getattr(exc, "error_code", ""))
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc) and "not found" in str(exc))


def champion_of(client, name: str):
    """The version aliased `champion`, or None when there is none yet; any other registry error
    (a 5xx, a timeout, a refused login) is raised, so the stage fails with its cause instead of
    promoting unconditionally."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, "champion")
    except MlflowException as exc:
        if no_such_alias(exc):
            return None
        raise


def training_keys(client, version) -> set[str] | None:
    """The image keys of the rows `version`'s pipeline trained on (its curate stage's train_keys.txt,
    `curation.hashing.training_key`), or None when that run recorded none (a run from before they were)."""
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    from model_src.data.curation.writing import TRAIN_KEYS_FILE
    from model_src.lineage_report import stage_runs
    from model_src.names import EXPORT_RUN_TAG, OUTPUTS_RUN_TAG, STAGE_TAG

    export_run = client.get_run(version.tags.get(EXPORT_RUN_TAG) or version.run_id)
    parent = client.get_run(export_run.data.tags["mlflow.parentRunId"])
    curate = next((r for r in stage_runs(client, parent) if r.data.tags.get(STAGE_TAG) == "curate"), None)
    if curate is None:
        return None
    source = curate.data.tags.get(OUTPUTS_RUN_TAG, curate.info.run_id)  # the run that holds the files
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=source, artifact_path=f"outputs/report/{TRAIN_KEYS_FILE}",
                                                       dst_path=tmp, tracking_uri=client.tracking_uri)
        except (MlflowException, OSError):
            return None
        return set(Path(path).read_text().split())


def gate(report: dict, current, cfg) -> "Decision":
    """The promotion decision for an evaluation `report` (eval.json) against `current`, the version
    aliased `champion` now (read under the promotion lock). The report's comparison must be with
    that very version: a champion that moved since evaluation makes it stale. Today's eval prompts
    the champion trained on (`trained_on`, found by evaluate) are left out of the comparison."""
    from model_src.eval.promotion import Decision, compare, decide

    compared = report.get("champion") or None
    compared_version = None if compared is None else str(compared["version"])
    current_version = None if current is None else str(current.version)
    if compared_version != current_version:
        return Decision(False, "stale", f"this run was compared with {f'version {compared_version}' if compared else 'no champion'}, "
                                        f"but the champion is now {f'version {current_version}' if current else 'none'}: "
                                        f"run again to compare with it")
    if compared is None:
        return decide(None, new_data=True, margin=cfg.promotion_margin, min_se=cfg.promotion_min_se,
                      tolerance=cfg.promotion_tolerance)
    mismatch = "" if compared["family"] == report.get("family") else (
        f"the champion (version {compared_version}) is a {compared['family']} model, this one a {report.get('family')}")
    seen = set(compared.get("trained_on") or ())  # today's eval prompts the champion trained on: left out
    ours = [r for r in report["samples"] if r["id"] not in seen]
    if not mismatch and not ours:
        return Decision(False, "not-comparable", f"the champion trained on every one of today's {len(seen)} eval "
                                                 f"prompts: nothing to compare on")
    comparison = None if mismatch else compare(ours, [r for r in compared["samples"] if r["id"] not in seen])
    decision = decide(comparison, new_data=compared.get("eval_data_hash") != report["eval_data_hash"],
                      margin=cfg.promotion_margin, min_se=cfg.promotion_min_se, tolerance=cfg.promotion_tolerance,
                      family_mismatch=mismatch)
    known = compared.get("trained_on") is not None
    figures = {**decision.figures, **({"champion_trained_on": float(len(seen))} if known else {})}
    note = (f"; {len(seen)} eval prompts the champion trained on left out" if seen else "") if known else \
        "; the champion's run recorded no training keys: no prompt left out"
    return Decision(decision.promoted, decision.rule, decision.reason + note, figures)


def promote(client, name: str, version: str, report: dict, cfg, holder: str, before_aliases=None):
    """Alias the new version `candidate`, and `champion` when the gate lets it (`gate`, against the
    champion read under the same lock: cluster.lock.exclusive, since MLflow cannot compare-and-set an
    alias and two exports at once would each read the old champion and each take it). The decision
    and its figures are tagged on the version, then `before_aliases(decision)` runs, then the
    aliases move: the last act, so a failure before it leaves the champion where it was."""
    from model_src.cluster.lock import exclusive

    with exclusive(f"promote-{name}", holder):
        decision = gate(report, champion_of(client, name), cfg)
        _pause_for_fault_injection()
        compared = report.get("champion") or {}
        for key, value in {PROMOTION_TAG: f"{'champion' if decision.promoted else 'candidate'}: {decision.reason}",
                           COMPARED_WITH_TAG: str(compared.get("version", "none")),
                           f"{PROMOTION_FIGURE_PREFIX}rule": decision.rule,
                           **{f"{PROMOTION_FIGURE_PREFIX}{k}": f"{v:.6g}" for k, v in decision.figures.items()}}.items():
            client.set_model_version_tag(name, version, key, value)
        if before_aliases is not None:
            before_aliases(decision)
        client.set_registered_model_alias(name, "candidate", version)
        if decision.promoted:
            client.set_registered_model_alias(name, "champion", version)
    return decision


def promotion_table(decision) -> str:
    """The card's promotion section: the rule and reason, and per domain both models' mean reward
    with its 95% Wilson interval and the paired gain with its SE."""
    figures = decision.figures
    lines = [f"**{'champion' if decision.promoted else 'candidate'}** (rule: {decision.rule}): {decision.reason}", ""]
    domains = sorted(k.split("/", 1)[1] for k in figures if k.startswith("gain/"))
    if domains:
        lines += ["| domain | prompts | champion (95% CI) | this version (95% CI) | paired gain | SE |",
                  "|---|---|---|---|---|---|"]
        for d in domains:
            lines.append(f"| {d} | {figures[f'prompts/{d}']:.0f} | {figures[f'champion/{d}']:.3f} "
                         f"({figures[f'champion_ci_low/{d}']:.3f}-{figures[f'champion_ci_high/{d}']:.3f}) | "
                         f"{figures[f'challenger/{d}']:.3f} ({figures[f'challenger_ci_low/{d}']:.3f}-"
                         f"{figures[f'challenger_ci_high/{d}']:.3f}) | {figures[f'gain/{d}']:+.3f} | "
                         f"{figures[f'gain_se/{d}']:.3f} |")
        lines.append(f"| mean | | {figures['champion_mean']:.3f} | {figures['challenger_mean']:.3f} | "
                     f"{figures['gain']:+.3f} | {figures['gain_se']:.3f} |")
    return "\n".join(lines)


def _pause_for_fault_injection() -> None:
    """Widen the read-to-write window by $THINKPIPE_FAULT_PROMOTION_PAUSE_S seconds (tests: two
    exports racing must still agree on one champion)."""
    import os
    import time

    from model_src.names import PROMOTION_PAUSE_ENV

    pause = float(os.environ.get(PROMOTION_PAUSE_ENV) or 0)
    if pause > 0:
        time.sleep(pause)
