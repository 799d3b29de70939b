"""finish: the pipeline's exit handler, run after every other task whether they succeeded or not.

Closes the pipeline's MLflow parent run: FAILED when any task failed (on a cluster too, where no
CLI is there to do it), FINISHED otherwise. A stage that KFP's cache reused started no process
and opened no run, so before closing, finish records on the parent run, per reused stage, the run
whose outputs were reused (tag `thinkpipe.reused.<stage>`); `thinkpipe lineage` and the CLI's
summary read them. Not in the paper: it is the pipeline's bookkeeping.
"""

from __future__ import annotations

from model_src.config import config_from_json
from model_src.names import ERROR_TAG, REUSED_TAG_PREFIX
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
    elif error:
        client.set_tag(scope.parent_run_id, ERROR_TAG, error[:4000])
    client.set_terminated(scope.parent_run_id, status)
    print(f"finish: pipeline run {scope.pipeline_run} {status}", flush=True)
    skip_final_gc()
    return status
