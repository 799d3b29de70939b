"""Local runs of the DAG with kfp.local: `run`, `retrain` (only when the data changed) and `golden`
(a fresh run checked against tests/golden/)."""

from __future__ import annotations

import argparse
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from pipelines.cli.common import (DEFAULT_STATE_DIR, CliError, check_run_name, local_image_ref, repo_root,
                                  resolve_tracking_uri)


@dataclass(frozen=True)
class LocalSetup:
    cfg: object  # PipelineConfig
    root: Path
    state_dir: Path
    tracking_uri: str
    experiment_id: str


def local_setup(args: argparse.Namespace) -> LocalSetup:
    """Config checked, MLflow reachable and its experiment there, the environment the stage
    subprocesses inherit; shared by `run` and `retrain` (which checks the data first)."""
    from model_src.config import load_config
    from model_src.tracking import check_tracking_uri, ensure_experiment

    cfg = load_config(args.profile, args.set or [])  # bad profile/key/type fails here, before any work
    if cfg.model.init_from:  # released weights: there, before init and curation run
        from model_src.model.build import check_weights_location

        check_weights_location(cfg.model.init_from)
    root = repo_root()
    state_dir = Path(args.state_dir or root / DEFAULT_STATE_DIR).resolve()
    tracking_uri, artifact_root = resolve_tracking_uri(args.tracking_uri, state_dir)
    check_tracking_uri(tracking_uri, timeout_s=15.0)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # the stage subprocesses inherit it
    from model_src.names import CHECKPOINT_ROOT_ENV

    os.environ.setdefault(CHECKPOINT_ROOT_ENV, str(state_dir / "checkpoints"))
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return LocalSetup(cfg, root, state_dir, tracking_uri, ensure_experiment(cfg.experiment, artifact_root, tracking_uri))


def unique_run_id(run_name: str) -> str:
    """The pipeline run's identity (tag `thinkpipe.pipeline_run`): its name plus a random suffix,
    so two runs started in the same second, or given the same name, never share a parent run."""
    import uuid

    return f"{run_name}-{uuid.uuid4().hex[:8]}"


def current_champion(name: str) -> str:
    """The version aliased `champion` in the registry now ("" when none): the run scores it beside the
    new model. A registry that errs stops the run here, never reads as "no champion"."""
    import mlflow

    from model_src.model_registry import champion_of

    version = champion_of(mlflow.MlflowClient(), name)
    if version is not None:
        print(f"thinkpipe: the champion is {name} version {version.version}: evaluate scores it on this run's "
              f"eval split beside the new model", flush=True)
    return "" if version is None else str(version.version)


def run_pipeline(args: argparse.Namespace, setup: LocalSetup) -> tuple[str, str, float]:
    """Run the training DAG with kfp.local; (run name, unique pipeline run id, seconds)."""
    data_dir = Path(args.data_dir or repo_root() / "data" / "raw").resolve()
    if not data_dir.is_dir():
        raise CliError(f"data folder {data_dir} not found: run `make data` first")
    cfg, root, state_dir, tracking_uri = setup.cfg, setup.root, setup.state_dir, setup.tracking_uri

    from model_src.lineage import dvc_pin, git_commit
    from model_src.names import LAUNCHER_PID_ENV, PIPELINE_RUN_ENV
    from model_src.tracking import safe_uri

    data_hash, data_rev = dvc_pin(root, getattr(args, "data_pin", None) or "data.dvc")
    champion = current_champion(cfg.export.registered_model_name)
    run_name = check_run_name(args.run_name or f"{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_id = unique_run_id(run_name)
    os.environ[PIPELINE_RUN_ENV] = run_id  # the stage subprocesses find their parent run by it
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())  # init names this process the pipeline's owner

    from kfp import local

    from pipelines.training import training_pipeline

    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    # KFP's own cache, keyed as on a cluster: an unchanged stage starts no process
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(state_dir / "kfp"),
               raise_on_error=True, enable_caching=not args.no_cache)
    print(f"thinkpipe: running {run_name} (profile {cfg.profile}) with MLflow at {safe_uri(tracking_uri)}", flush=True)
    started = time.monotonic()
    try:
        training_pipeline(
            config_json=cfg.to_json(), data_dir=str(data_dir), git_commit=git_commit(root),
            data_hash=data_hash, data_rev=data_rev, image=local_image_ref(root),
            pipeline_run_name=run_name, use_cache=not args.no_cache, champion_version=champion)
    except Exception as exc:  # the exit handler (finish) has marked the MLflow parent run FAILED
        raise CliError(f"{exc}\nThe failed stage's log is above. Fix the cause and run again: stages that "
                       f"finished are reused, so work resumes at the failed stage.") from exc
    return run_name, run_id, time.monotonic() - started


def cmd_run(args: argparse.Namespace, setup: LocalSetup | None = None) -> int:
    setup = setup or local_setup(args)
    run_name, run_id, seconds = run_pipeline(args, setup)
    print_summary(setup, run_name, run_id, seconds)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """Run the training DAG only when the DVC pin differs from the champion's training data."""
    from model_src.retrain import check_data, log_decision

    setup = local_setup(args)
    cfg = setup.cfg
    decision = check_data(setup.root, cfg.export.registered_model_name, rev=args.rev)
    run_name = args.run_name or f"{cfg.profile}-retrain-{time.strftime('%Y%m%d-%H%M%S')}"
    log_decision(decision, setup.experiment_id, f"{run_name}-check")
    print(f"thinkpipe retrain: {'retraining' if decision.retrain else 'nothing to do'}: {decision.reason}", flush=True)
    if not decision.retrain:
        return 0
    args.run_name = run_name
    return cmd_run(args, setup)


def print_summary(setup: LocalSetup, run_name: str, run_id: str, seconds: float) -> None:
    """The registered version and the exported folder: from the export run this pipeline run ran,
    or, when KFP reused export, from the run whose outputs it reused (recorded by finish)."""
    from mlflow.tracking import MlflowClient

    from model_src.names import PIPELINE_RUN_TAG, PIPELINE_STAGE, REUSED_TAG_PREFIX, STAGE_TAG, result_tag
    from model_src.tracking import safe_uri

    client = MlflowClient()
    [parent] = client.search_runs([setup.experiment_id], f"tags.`{PIPELINE_RUN_TAG}` = '{run_id}' "
                                  f"AND tags.`{STAGE_TAG}` = '{PIPELINE_STAGE}'", max_results=1)
    ran = client.search_runs([setup.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                             f"AND tags.`{STAGE_TAG}` = 'export'", max_results=1)
    reused_id = parent.data.tags.get(f"{REUSED_TAG_PREFIX}export")
    export_run = ran[0] if ran else client.get_run(reused_id) if reused_id else None
    version = export_run.data.tags.get(result_tag("model_version"), "?") if export_run else "?"
    name = setup.cfg.export.registered_model_name
    print(f"\nthinkpipe: pipeline {run_name} finished in {seconds:.0f} s (MLflow parent run {parent.info.run_id})")
    print(f"  registered model : {name} version {version}  (thinkpipe lineage {name}/{version})")
    if export_run is not None:
        import mlflow

        from model_src.names import OUTPUTS_RUN_TAG
        from model_src.tracking import local_artifact_path

        source = export_run.data.tags.get(OUTPUTS_RUN_TAG, export_run.info.run_id)  # the run that holds the files
        # a local store's artifacts are read in place (no copy of the weights per run); a remote one's downloaded
        exported = local_artifact_path(f"{client.get_run(source).info.artifact_uri}/outputs/exported")
        if exported is None:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # a summary, not a progress report
            exported = mlflow.artifacts.download_artifacts(run_id=source, artifact_path="outputs/exported",
                                                           dst_path=str(setup.state_dir / "exports" / source))
        print(f"  exported folder  : {exported}")
    reused = {k[len(REUSED_TAG_PREFIX):]: v for k, v in parent.data.tags.items() if k.startswith(REUSED_TAG_PREFIX)}
    if reused:  # KFP's cache skipped these stages: the runs whose outputs this pipeline run used
        print("  reused stages    : " + ", ".join(f"{stage} (run {run})" for stage, run in reused.items()))
    if reused_id and not ran:
        print(f"  (export reused the outputs of run {reused_id}: nothing changed since)")
    if setup.tracking_uri.startswith("sqlite:"):
        print(f"  MLflow UI        : .venv/bin/mlflow ui --backend-store-uri {setup.tracking_uri}")
    else:
        print(f"  MLflow UI        : {safe_uri(setup.tracking_uri)}")


def cmd_golden(args: argparse.Namespace) -> int:
    """Run the profile afresh (no cache, a new store) and compare every stage's metrics with the
    committed golden file within the profile's tolerance, or (--record) rewrite that file."""
    import tempfile

    from model_src import golden

    path = Path(args.file) if args.file else golden.golden_path(args.profile)
    tol = golden.tolerance(args.profile)
    code_path = args.code_path or tol.code_path
    if not args.record:
        recorded = golden.load_file(path)
        if tol.code_path != "native" and recorded["code_path"] != code_path:
            raise CliError(f"{path} was recorded on the {recorded['code_path']} CPU code path; this run takes "
                           f"{code_path}: profile {args.profile} compares only runs of one path "
                           f"({tol.code_path}); record afresh with --record")
    # golden files are CPU fp32 runs: a GPU would train in bf16, which no golden file records
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    switches = golden.code_path_environment(code_path, tol.threads if code_path == tol.code_path else 0)
    os.environ.update(switches)  # the stage processes inherit them before they import torch
    if switches:
        print(f"thinkpipe golden: CPU code path {code_path}: " + " ".join(f"{k}={v}" for k, v in switches.items()))
    with tempfile.TemporaryDirectory(prefix="thinkpipe-golden-") as tmp:
        args.state_dir, args.tracking_uri, args.no_cache = tmp, f"sqlite:///{tmp}/mlflow/mlflow.db", True
        args.run_name = args.run_name or f"golden-{args.profile}"
        setup = local_setup(args)
        _, run_id, seconds = run_pipeline(args, setup)
        from mlflow.tracking import MlflowClient

        actual = golden.pipeline_stage_metrics(MlflowClient(), setup.experiment_id, run_id)
    if args.record:
        golden.record(path, actual, f"thinkpipe golden --profile {args.profile} --record ({seconds:.0f} s)",
                      code_path=code_path)
        print(f"thinkpipe: recorded {sum(map(len, actual.values()))} metrics of {len(actual)} stages to {path}")
        return 0
    problems = golden.compare(recorded["stages"], actual, tol)
    for line in problems:
        print(f"  {line}")
    print(f"thinkpipe: {args.profile} run ({seconds:.0f} s, code path {code_path}) vs {path}: counts exact, "
          f"real metrics within relative {tol.real_rel:g}, rates within {tol.rate_abs:g}: "
          + (f"{len(problems)} differences" if problems else f"all {sum(map(len, actual.values()))} metrics match"))
    return 1 if problems else 0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a local run (shared by `run` and `retrain`)."""
    parser.add_argument("--profile", default="small", help="config profile under configs/ (default: small)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. sft.lr=3e-4")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a local SQLite store)")
    parser.add_argument("--data-dir", help="raw corpus folder (default: data/raw)")
    parser.add_argument("--data-pin", metavar="DVC_FILE",
                        help="the .dvc file pinning --data-dir, e.g. from `dvc add` of an ingested corpus "
                             "(default: data.dvc at the repository root)")
    parser.add_argument("--run-name", help="name of the pipeline run (default: PROFILE-TIMESTAMP)")
    parser.add_argument("--state-dir", help=f"local run state: kfp outputs and the default MLflow store (default: {DEFAULT_STATE_DIR}/)")
    parser.add_argument("--no-cache", action="store_true", help="recompute every stage even when its content key matches")
