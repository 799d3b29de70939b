"""The life of one pipeline stage: lineage in, a nested MLflow run, resumable work, outputs out.

Every stage module calls `run_stage` with its work function. The runner

1. reads the lineage value (made by `init`) and finds its pipeline run's MLflow parent run from
   the run's identity ($THINKPIPE_PIPELINE_RUN), not from an input, so the stage's KFP cache key
   stays the lineage and the upstream artifacts;
2. computes the stage's content key from the lineage, the config sections the stage reads
   (registry.py) and the hashes of its input artifacts; it names the stage's checkpoint folder, so
   a killed attempt resumes its own checkpoints and MLflow run;
3. if a FINISHED run with that key exists (and caching is on), copies that run's outputs and
   metrics into this run instead of recomputing;
4. otherwise opens a nested MLflow run under the parent, calls the work function, logs the outputs
   as run artifacts and tags their hashes (how the lineage report links a stage to its upstream).

Two caches, on purpose. KFP's (kfp.local's locally, the same key on a cluster: the component and its
inputs, the lineage value included) skips an unchanged stage before any process starts. Its key
holds the whole config, so a change to `sft.lr` misses it for every stage; the content key holds
only the sections a stage reads, so curate and pretrain are still reused (step 3), at the price
of a process start. A failure inside the work marks the stage run FAILED and propagates; the
pipeline's exit handler (finish.py) marks the parent run FAILED.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from model_src.cluster.lock import exclusive
from model_src.config import PipelineConfig
from model_src.lineage import Lineage, RunScope, hash_path, stage_cache_key
from model_src.names import (AFTER_WORK_FAULT_ENV, CACHE_KEY_TAG, CACHED_FROM_TAG, CHECKPOINT_ROOT_ENV, ERROR_TAG,
                             FAULT_ENV, INPUT_TAG_PREFIX,
                             OUTPUT_TAG_PREFIX,
                             OUTPUTS_RUN_TAG, PIPELINE_RUN_ENV, PIPELINE_RUN_TAG, PIPELINE_STAGE, RESULT_TAG_PREFIX, RESUMED_TAG,
                             STAGE_CONFIG_HASH_TAG, STAGE_TAG, TAKEN_OVER_BY_TAG, result_tag)
from model_src.stages.registry import stage as registry_stage
from model_src.tracking import TrackingLost, retry_policy, safe_uri, stop_retrying, tracking_gave_up


class InjectedFault(RuntimeError):
    pass


@dataclass
class StageContext:
    """What a stage's work function gets: its config, lineage, run scope, input and output paths."""

    stage: str
    lineage: Lineage
    scope: RunScope
    inputs: dict[str, Path]
    outputs: dict[str, Path]
    run_id: str
    checkpoint_dir: Path | None = None  # this stage's checkpoints, keyed by its content key
    result_tags: dict[str, str] = field(default_factory=dict)
    # what must happen last, after everything that can fail has been logged (export's promotion)
    last_act: Callable[[], None] | None = None
    input_hashes: dict[str, str] = field(default_factory=dict)  # the runner's, made for the content key

    def input_hash(self, name: str) -> str:
        """The sha256 of input `name`: the one the runner already made, else made now (a job's process)."""
        return self.input_hashes.get(name) or hash_path(self.inputs[name])
    is_main: bool = True  # False on the other ranks of a multi-process training job: they log nothing

    @property
    def cfg(self) -> PipelineConfig:
        return self.lineage.config

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.is_main:
            return
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_result(self, key: str, value: str) -> None:
        """A result of the stage (e.g. the registered model version), tagged `thinkpipe.result.<key>`."""
        self.result_tags[result_tag(key)] = str(value)


def _flatten(prefix: str, value: object, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = str(value)


def find_run_scope(experiment: str) -> RunScope:
    """This pipeline run's scope: its id from $THINKPIPE_PIPELINE_RUN (set by `thinkpipe run`, or
    from the pod's Argo workflow on a cluster) and the parent run `init` opened under that id."""
    import mlflow

    from model_src.tracking import ensure_experiment

    pipeline_run = os.environ.get(PIPELINE_RUN_ENV, "")
    if not pipeline_run:
        raise RuntimeError(f"{PIPELINE_RUN_ENV} is not set: a stage must know which pipeline run it belongs to")
    experiment_id = ensure_experiment(experiment)
    parents = mlflow.MlflowClient().search_runs(
        [experiment_id], f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run}' AND tags.`{STAGE_TAG}` = '{PIPELINE_STAGE}'",
        max_results=2)
    if len(parents) != 1:
        problem = "no" if not parents else "more than one"
        raise RuntimeError(f"{problem} MLflow parent run for pipeline run {pipeline_run!r} in experiment "
                           f"{experiment!r}: the init stage opens exactly one")
    return RunScope(pipeline_run, parents[0].info.run_id, experiment_id)


def _find_cached_run(experiment_id: str, key: str):
    from mlflow.tracking import MlflowClient

    runs = MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.`{CACHE_KEY_TAG}` = '{key}' AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _restore_outputs(source_run_id: str, outputs: dict[str, Path]) -> None:
    import tempfile

    import mlflow

    for name, dest in outputs.items():
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(
                run_id=source_run_id, artifact_path=f"outputs/{name}", dst_path=tmp))
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(local, dest)


STAGE_LOCK_WAIT_S = 7 * 24 * 3600.0  # a stage may run for days on a cluster; the waiter waits it out


def _close_abandoned_runs(scope: RunScope, key: str, resuming: str | None) -> None:
    """Runs of this content key still RUNNING belong to attempts that died (a live one would hold
    the key's lock we hold): mark them KILLED, linking this pipeline run, and their pipeline's
    parent run too when it is still RUNNING and not ours. The run being resumed is continued, not
    closed, but its old parent is."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    stale = client.search_runs([scope.experiment_id], filter_string=f"tags.`{CACHE_KEY_TAG}` = '{key}' "
                                                                    "AND attributes.status = 'RUNNING'")
    link = {TAKEN_OVER_BY_TAG: scope.parent_run_id, f"{TAKEN_OVER_BY_TAG}.pipeline_run": scope.pipeline_run}
    parents = set()
    for run in stale:
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent and parent != scope.parent_run_id:
            parents.add(parent)
        if run.info.run_id != resuming:
            for tag, value in link.items():
                client.set_tag(run.info.run_id, tag, value)
            client.set_terminated(run.info.run_id, "KILLED")
            print(f"marked run {run.info.run_id} KILLED: its attempt died; this pipeline run takes over its work",
                  flush=True)
    for parent in parents:
        if client.get_run(parent).info.status == "RUNNING":
            for tag, value in link.items():
                client.set_tag(parent, tag, value)
            client.set_terminated(parent, "KILLED")
            print(f"marked pipeline run {parent} KILLED: a stage of it died and this pipeline run took its work over",
                  flush=True)


def _run_to_resume(checkpoint_dir: Path | None) -> str | None:
    """The MLflow run id saved in this stage's newest checkpoint, if there is one."""
    from model_src.train.checkpoint import newest_run_id

    return newest_run_id(checkpoint_dir) if checkpoint_dir else None


def run_stage(
    stage: str,
    *,
    lineage: str | Lineage,
    inputs: dict[str, str | Path],
    outputs: dict[str, str | Path],
    work: Callable[[StageContext], dict[str, float]],
    use_cache: bool = True,
) -> dict[str, float]:
    """Run (or reuse) one stage; returns its final metrics. Every output is a folder."""
    import mlflow

    spec = registry_stage(stage)
    lineage = lineage if isinstance(lineage, Lineage) else Lineage.from_json(lineage)
    cfg = lineage.config
    scope = find_run_scope(cfg.experiment)
    input_paths = {name: Path(p) for name, p in inputs.items()}
    output_paths = {name: Path(p) for name, p in outputs.items()}
    for name, path in input_paths.items():
        if not path.exists():
            raise FileNotFoundError(f"stage {stage}: input artifact '{name}' not found at {path}")
    input_hashes = {name: hash_path(p) for name, p in input_paths.items()}
    stage_config_hash = cfg.section_hash(*spec.config_sections)
    key = stage_cache_key(stage, lineage, stage_config_hash, input_hashes)

    params: dict[str, str] = {}
    plain = cfg.to_dict()
    for section in spec.config_sections:
        _flatten(section, plain[section], params)
    tags = {
        **lineage.tags(),
        **scope.tags(),
        STAGE_TAG: stage,
        CACHE_KEY_TAG: key,
        STAGE_CONFIG_HASH_TAG: stage_config_hash,
        **{f"{INPUT_TAG_PREFIX}{name}": h for name, h in input_hashes.items()},
    }
    # one live run does this work: a second pipeline run with the same content key waits here, then
    # finds the first's FINISHED run as a content-key hit; runs left RUNNING by a killed attempt
    # are closed as KILLED by whoever takes the work over
    with exclusive(f"stage-{stage}-{key[:32]}", holder=scope.pipeline_run, timeout_s=STAGE_LOCK_WAIT_S):
        cached = _find_cached_run(scope.experiment_id, key) if use_cache else None
        root = os.environ.get(CHECKPOINT_ROOT_ENV)
        checkpoint_dir = Path(root) / stage / key if root else None
        resume_run_id = _run_to_resume(checkpoint_dir) if cached is None else None
        _close_abandoned_runs(scope, key, resume_run_id)

        if resume_run_id:  # a killed attempt left a checkpoint: continue its MLflow run, now under this pipeline run
            run = mlflow.start_run(run_id=resume_run_id, log_system_metrics=spec.system_metrics)
            mlflow.set_tags({**tags, "mlflow.parentRunId": scope.parent_run_id, RESUMED_TAG: "true"})
        else:
            run = mlflow.start_run(experiment_id=scope.experiment_id, run_name=stage,
                                   parent_run_id=scope.parent_run_id, tags=tags,
                                   log_system_metrics=spec.system_metrics and cached is None)
        try:  # the run is ended below, not by a `with`: a lost tracking server is not asked again to end it
            mlflow.log_params(params)
            started = time.monotonic()
            if cached is not None:
                source = cached.data.tags.get(OUTPUTS_RUN_TAG, cached.info.run_id)
                _restore_outputs(source, output_paths)
                metrics = dict(cached.data.metrics)
                carried = {k: v for k, v in cached.data.tags.items()
                           if k.startswith(RESULT_TAG_PREFIX) or k.startswith(OUTPUT_TAG_PREFIX)}
                mlflow.set_tags({**carried, CACHED_FROM_TAG: cached.info.run_id, OUTPUTS_RUN_TAG: source})
                if metrics:
                    mlflow.log_metrics(metrics)
                print(f"[{stage}] content-key hit: reusing outputs of run {source} (key {key[:12]})", flush=True)
            else:
                if os.environ.get(FAULT_ENV) == stage:
                    raise InjectedFault(f"stage {stage}: fault injected by {FAULT_ENV}")
                for path in output_paths.values():
                    path.mkdir(parents=True, exist_ok=True)
                ctx = StageContext(stage, lineage, scope, input_paths, output_paths, run.info.run_id, checkpoint_dir,
                                   input_hashes=input_hashes)
                metrics = work(ctx) or {}
                if metrics:
                    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
                for name, path in output_paths.items():
                    mlflow.log_artifacts(str(path), f"outputs/{name}")
                mlflow.set_tags({
                    **ctx.result_tags,
                    **{f"{OUTPUT_TAG_PREFIX}{name}": hash_path(p) for name, p in output_paths.items()},
                    OUTPUTS_RUN_TAG: run.info.run_id,
                })
                if os.environ.get(AFTER_WORK_FAULT_ENV) == stage:
                    raise InjectedFault(f"stage {stage}: fault injected by {AFTER_WORK_FAULT_ENV} before its last act")
                mlflow.log_metric("stage_seconds", time.monotonic() - started)
                if ctx.last_act is not None:  # nothing that can fail runs after it but ending the run
                    ctx.last_act()
        except BaseException as exc:  # an interrupt too: the run must not be ended as FINISHED
            if not tracking_gave_up(exc) and _record_failure(exc) is None:
                mlflow.end_run("FAILED")
                raise
            lost = _tracking_lost(stage, run.info.run_id, checkpoint_dir)
            stop_retrying()
            with contextlib.suppress(Exception):
                mlflow.end_run("FAILED")  # forgets the run here; the server is not asked twice
            raise lost from exc
        if cached is not None:
            mlflow.log_metric("stage_seconds", time.monotonic() - started)
        mlflow.end_run()
        if checkpoint_dir is not None and cached is None:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # outputs are logged; checkpoints served their turn
    skip_final_gc()
    return metrics


def _record_failure(exc: BaseException) -> BaseException | None:
    """Tag the stage's run with why it failed (the exit handler's failure notice reads it); returns
    the tracking error instead when the server could not be told."""
    import mlflow

    try:
        mlflow.set_tag(ERROR_TAG, failure_cause(exc))
    except Exception as tag_error:
        if tracking_gave_up(tag_error):
            return tag_error
        raise
    return None


def _tracking_lost(stage: str, run_id: str, checkpoint_dir: Path | None) -> TrackingLost:
    """The error a stage ends with when its tracking server stopped answering: what was kept and
    how to go on. The run stays RUNNING on the server; the rerun that takes the work over resumes
    it from its newest checkpoint, or marks it KILLED when there is none."""
    import mlflow

    kept = (f"its checkpoints in {checkpoint_dir} are kept: a rerun resumes from the newest and continues run "
            f"{run_id}" if _run_to_resume(checkpoint_dir) else f"it had no checkpoint: a rerun starts it over and marks run {run_id} KILLED")
    return TrackingLost(f"stage {stage}: the MLflow tracking server {safe_uri(mlflow.get_tracking_uri())} stopped "
                        f"answering ({retry_policy()} spent); {kept}. Rerun the pipeline once the server is back.")


def failure_cause(exc: BaseException) -> str:
    """What a failed run records as its cause: the exception, unless it looks like it carries a secret."""
    from model_src.secret_scan import find_secrets

    text = f"{type(exc).__name__}: {exc}"[:4000]
    return f"{type(exc).__name__} (message withheld: it looked like it carried a secret)" if find_secrets(text) else text


def skip_final_gc() -> None:
    """A stage runs in a short-lived process that ends soon after this. Freezing the heap spares
    the interpreter a last garbage-collection sweep over torch/mlflow's object graph at exit,
    which costs about a second per stage (measured: 1.3 s -> 0.15 s exit after an MLflow run)."""
    import gc

    gc.freeze()


def to_kfp_metrics(artifact, metrics: dict[str, float]) -> None:
    """A stage's final metrics onto its KFP Metrics output (the KFP UI shows them), and written as
    JSON at the artifact's path: KFP keeps Metrics in metadata only, and kfp.local's cache treats an
    output whose file does not exist as missing, so without the file no stage would ever be reused."""
    import json

    for name, value in metrics.items():
        artifact.log_metric(name, value)
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps({k: float(v) for k, v in metrics.items()}, sort_keys=True))
