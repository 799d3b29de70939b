"""finish: the pipeline's exit handler, run after every other task whether they succeeded or not.

Closes the pipeline's MLflow parent run: FAILED when any task failed (on a cluster too, where no
CLI is there to do it), FINISHED otherwise. A stage that KFP's cache reused started no process
and opened no run, so before closing, finish records on the parent run, per reused stage, the run
whose outputs were reused (tag `thinkpipe.reused.<stage>`); `thinkpipe lineage` and the CLI's
summary read them. When a stage failed and a failure webhook is configured
(`THINKPIPE_FAILURE_WEBHOOK`, model_src/notify.py), finish posts the failure: pipeline run,
failed stages, their recorded causes, the MLflow run to audit. Not in the paper: it is the
pipeline's bookkeeping.
"""

from __future__ import annotations

from model_src.config import config_from_json
from model_src.names import ERROR_TAG, REUSED_TAG_PREFIX, STAGE_TAG
from model_src.stages.runner import find_run_scope, skip_final_gc


def run(*, config_json: str, pipeline_state: str, error: str = "") -> str:
    """Close the parent run; returns its final status (FINISHED or FAILED), or "" when there was none."""
    import mlflow

    from model_src.lineage_report import reused_stage_runs

    cfg = config_from_json(config_json)
    try:
        scope = find_run_scope(cfg.experiment)
    except RuntimeError as exc:  # init failed before it opened the parent run: nothing to close
        print(f"finish: {exc}", flush=True)
        return ""
    client = mlflow.MlflowClient()
    status = "FINISHED" if pipeline_state == "SUCCEEDED" else "FAILED"
    if status == "FINISHED":
        parent = client.get_run(scope.parent_run_id)
        for stage, source in reused_stage_runs(client, parent).items():
            client.set_tag(scope.parent_run_id, f"{REUSED_TAG_PREFIX}{stage}", source.info.run_id)
            print(f"finish: {stage} reused the outputs of run {source.info.run_id}", flush=True)
    else:
        if error:
            client.set_tag(scope.parent_run_id, ERROR_TAG, error[:4000])
        notify_failure_of(client, scope, error)
    client.set_terminated(scope.parent_run_id, status)
    print(f"finish: pipeline run {scope.pipeline_run} {status}", flush=True)
    skip_final_gc()
    return status


def notify_failure_of(client, scope, error: str) -> None:
    """Post the failed pipeline run to the failure webhook, if one is configured; never raises."""
    from model_src.notify import NOTIFIED_TAG, Failure, mlflow_run_link, post_failure, webhook_url

    url = webhook_url()
    if not url:
        return
    failed = client.search_runs([scope.experiment_id], f"tags.mlflow.parentRunId = '{scope.parent_run_id}' "
                                "AND attributes.status = 'FAILED'")
    stages = sorted(r.data.tags.get(STAGE_TAG, "?") for r in failed)
    causes = [f"{r.data.tags.get(STAGE_TAG, '?')}: {r.data.tags[ERROR_TAG]}" for r in failed if ERROR_TAG in r.data.tags]
    failure = Failure("thinkpipe-training", scope.pipeline_run, "; ".join(causes) or error or "unknown", stages,
                      mlflow_run_link(client.tracking_uri, scope.experiment_id, scope.parent_run_id))
    problem = post_failure(failure, url)
    print(f"finish: {problem or 'posted the failure to the failure webhook'}", flush=True)
    client.set_tag(scope.parent_run_id, NOTIFIED_TAG, "no: " + problem if problem else "yes")


def notify_run(*, config_json: str, pipeline_state: str, error: str = "") -> str:
    """The retraining DAG's exit handler: post its failure, unless the training DAG's `finish`
    already posted this run's (one failure, one message). Returns the pipeline's final state."""
    import os

    import mlflow

    from model_src.names import PIPELINE_RUN_ENV
    from model_src.notify import NOTIFIED_TAG, Failure, mlflow_run_link, post_failure, webhook_url
    from model_src.tracking import ensure_experiment

    url = webhook_url()
    if pipeline_state == "SUCCEEDED" or not url:
        return pipeline_state
    cfg = config_from_json(config_json)
    client = mlflow.MlflowClient()
    try:
        scope = find_run_scope(cfg.experiment)
    except RuntimeError:  # the training DAG never opened its run: the data check (or init) failed
        scope = None
    if scope is not None and client.get_run(scope.parent_run_id).data.tags.get(NOTIFIED_TAG) == "yes":
        print("finish: the training DAG's exit handler already posted this failure", flush=True)
        return pipeline_state
    link = (mlflow_run_link(client.tracking_uri, scope.experiment_id, scope.parent_run_id) if scope is not None
            else mlflow_run_link(client.tracking_uri, ensure_experiment(cfg.experiment)))
    cause = error or "unknown"
    if scope is None:
        cause += " (before the training DAG opened its MLflow run: in the data check or init)"
    failure = Failure("thinkpipe-retraining", os.environ.get(PIPELINE_RUN_ENV, "?"), cause, [], link)
    problem = post_failure(failure, url)
    print(f"finish: {problem or 'posted the failure to the failure webhook'}", flush=True)
    return pipeline_state
