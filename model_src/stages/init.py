"""init: the first stage of every pipeline run.

Checks the raw data folder against the DVC pin (the data a run trains on is the data its lineage
names), opens the pipeline's MLflow parent run and an `init` run under it, and returns the
lineage value every later stage takes as its one lineage input. Not cached: each pipeline run
needs its own parent run. The paper has no such step; it is the pipeline's bookkeeping.

Run alone (needs $THINKPIPE_PIPELINE_RUN and an MLflow store):

    python -c "from model_src.stages.init import run; run(config_json=..., data_dir='data/raw', ...)"
"""

from __future__ import annotations

import json
import os

from model_src.config import config_from_json
from model_src.lineage import Lineage, LineageError, RunScope, dvc_dir_hash
from model_src.names import OWNER_TAG, PIPELINE_RUN_ENV, PIPELINE_RUN_TAG, PIPELINE_STAGE, PROFILE_TAG, STAGE_TAG
from model_src.stages.liveness import close_dead_pipelines, owner
from model_src.stages.runner import skip_final_gc


def run(*, config_json: str, data_dir: str, git_commit: str, data_hash: str, data_rev: str, image: str,
        pipeline_run_name: str) -> tuple[Lineage, RunScope]:
    """(lineage value, run scope). `data_hash` "" skips the pin check (a corpus made on the spot)."""
    import mlflow

    from model_src.tracking import ensure_experiment

    cfg = config_from_json(config_json)
    actual = dvc_dir_hash(data_dir)
    if data_hash and actual != data_hash:
        raise LineageError(f"data folder {data_dir} hashes to {actual}, but data.dvc pins {data_hash}: "
                           f"run `make data` (dvc pull / checkout) first")
    # the stages find the parent run by the pipeline run's unique id (set by `thinkpipe run`, or the
    # Argo workflow's name on a cluster); pipeline_run_name is the name people gave the run
    pipeline_run = os.environ.get(PIPELINE_RUN_ENV) or pipeline_run_name
    if not pipeline_run:
        raise LineageError(f"neither {PIPELINE_RUN_ENV} nor pipeline_run_name is set: the stages could not find "
                           f"this run's MLflow parent run")
    lineage = Lineage.make(config_json=config_json, git_commit=git_commit, data_hash=actual, data_rev=data_rev,
                           image=image)
    experiment_id = ensure_experiment(cfg.experiment)
    client = mlflow.MlflowClient()
    parent = client.create_run(experiment_id, run_name=pipeline_run_name or pipeline_run, tags={
        **lineage.tags(), PIPELINE_RUN_TAG: pipeline_run, STAGE_TAG: PIPELINE_STAGE, PROFILE_TAG: cfg.profile,
        **({OWNER_TAG: who} if (who := owner()) else {})})
    scope = RunScope(pipeline_run, parent.info.run_id, experiment_id)
    close_dead_pipelines(client, experiment_id, scope.parent_run_id, pipeline_run)  # killed between two stages
    client.log_text(scope.parent_run_id, json.dumps(cfg.to_dict(), indent=2, sort_keys=True), "config.json")
    client.log_param(scope.parent_run_id, "profile", cfg.profile)
    client.log_param(scope.parent_run_id, "seed", cfg.seed)
    with mlflow.start_run(experiment_id=experiment_id, run_name="init", parent_run_id=scope.parent_run_id,
                          tags={**lineage.tags(), **scope.tags(), STAGE_TAG: "init"}):
        mlflow.log_text(cfg.to_json(), "config.json")
        mlflow.log_params({"profile": cfg.profile, "seed": cfg.seed, "data_dir": data_dir})
    skip_final_gc()
    return lineage, scope
