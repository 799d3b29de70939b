"""`thinkpipe`: run, compile and audit the training pipeline.

    thinkpipe run [--profile small|tiny] [--set key=value ...] [--tracking-uri URI] [--no-cache]
    thinkpipe retrain [run options] [--rev HEAD]
    thinkpipe submit --host URL [--experiment NAME] [--pipeline training|retraining]
    thinkpipe schedule --host URL --cron '0 3 * * *'
    thinkpipe compile [--profile glm4v-9b] [--out-dir pipelines/compiled]
    thinkpipe lineage NAME[/VERSION|@alias]
    thinkpipe stages
    thinkpipe plan [--profile glm4v-9b] [--gpu-memory 80] [--check]
    thinkpipe golden [--profile small] [--record]
    thinkpipe data [--out data/raw] [--seed 1234]
    thinkpipe curate --input data/raw --output DIR [--profile small]
    thinkpipe serve [--model FOLDER|NAME/VERSION|NAME@alias] [--port 8000] [--venv .venv-serve]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from pipelines.compile import COMPILED_DIR, DEFAULT_CLUSTER_PROFILE  # light: kfp is imported inside

DEFAULT_STATE_DIR = ".thinkpipe"  # local MLflow store and kfp.local outputs, git-ignored


class CliError(RuntimeError):
    pass


def repo_root() -> Path:
    """The project folder: the nearest parent of the cwd holding `data.dvc`, else the cwd."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "data.dvc").is_file():
            return folder
    return here


def local_image_ref(root: Path) -> str:
    """A local run has no container: name the environment by the hash of its pinned lock file.
    (Avoid the word 'python3' in it: kfp.local rewrites that string in task commands.)"""
    lock = root / "requirements.lock"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16] if lock.is_file() else "unpinned"
    return f"local-venv:py{sys.version_info.major}.{sys.version_info.minor}@lock-sha256:{digest}"


def resolve_tracking_uri(arg: str | None, state_dir: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact root for new experiments, or None to let a server decide).
    A SQLite store keeps its artifacts in a folder beside the database, never in the cwd."""
    from model_src.tracking import local_tracking

    uri = arg or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return local_tracking(state_dir / "mlflow")
    if uri.startswith("sqlite:///"):
        return uri, (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return uri, None


# -------------------------------------------------------------------------------------------- run
@dataclass(frozen=True)
class LocalSetup:
    cfg: object  # PipelineConfig
    root: Path
    state_dir: Path
    tracking_uri: str
    experiment_id: str


def _local_setup(args: argparse.Namespace) -> LocalSetup:
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


def check_run_name(name: str) -> str:
    """A run name goes into MLflow search filters and KFP names: quotes, backslashes, backticks and
    control characters are refused here, naming the character."""
    bad = next((ch for ch in name if ch in "'\"\\`" or ord(ch) < 32), None)
    if bad is not None or not name.strip():
        raise CliError(f"run name {name!r}: {'empty' if bad is None else f'character {bad!r} is not allowed'} "
                       f"(use letters, digits, spaces and - _ . : + @)")
    return name


def unique_run_id(run_name: str) -> str:
    """The pipeline run's identity (tag `thinkpipe.pipeline_run`): its name plus a random suffix,
    so two runs started in the same second, or given the same name, never share a parent run."""
    import uuid

    return f"{run_name}-{uuid.uuid4().hex[:8]}"


def run_pipeline(args: argparse.Namespace, setup: LocalSetup) -> tuple[str, str, float]:
    """Run the training DAG with kfp.local; (run name, unique pipeline run id, seconds)."""
    data_dir = Path(args.data_dir or repo_root() / "data" / "raw").resolve()
    if not data_dir.is_dir():
        raise CliError(f"data folder {data_dir} not found: run `make data` first")
    cfg, root, state_dir, tracking_uri = setup.cfg, setup.root, setup.state_dir, setup.tracking_uri

    from model_src.lineage import dvc_pin, git_commit
    from model_src.names import PIPELINE_RUN_ENV
    from model_src.tracking import safe_uri

    data_hash, data_rev = dvc_pin(root, getattr(args, "data_pin", None) or "data.dvc")
    run_name = check_run_name(args.run_name or f"{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_id = unique_run_id(run_name)
    os.environ[PIPELINE_RUN_ENV] = run_id  # the stage subprocesses find their parent run by it

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
            pipeline_run_name=run_name, use_cache=not args.no_cache)
    except Exception as exc:  # the exit handler (finish) has marked the MLflow parent run FAILED
        raise CliError(f"{exc}\nThe failed stage's log is above. Fix the cause and run again: stages that "
                       f"finished are reused, so work resumes at the failed stage.") from exc
    return run_name, run_id, time.monotonic() - started


def cmd_run(args: argparse.Namespace, setup: LocalSetup | None = None) -> int:
    setup = setup or _local_setup(args)
    run_name, run_id, seconds = run_pipeline(args, setup)
    _print_summary(setup, run_name, run_id, seconds)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """Run the training DAG only when the DVC pin differs from the champion's training data."""
    from model_src.retrain import check_data, log_decision

    setup = _local_setup(args)
    cfg = setup.cfg
    decision = check_data(setup.root, cfg.export.registered_model_name, rev=args.rev)
    run_name = args.run_name or f"{cfg.profile}-retrain-{time.strftime('%Y%m%d-%H%M%S')}"
    log_decision(decision, setup.experiment_id, f"{run_name}-check")
    print(f"thinkpipe retrain: {'retraining' if decision.retrain else 'nothing to do'}: {decision.reason}", flush=True)
    if not decision.retrain:
        return 0
    args.run_name = run_name
    return cmd_run(args, setup)


def _cluster_params(args: argparse.Namespace, pipeline: str):
    """(config, KFP run parameters, git commit) for a cluster run of `pipeline`; refuses params
    that look like they carry a secret value."""
    from components.image import SOURCE_SHA256, image_reference
    from model_src.config import load_config
    from model_src.image_source import stale_image
    from model_src.lineage import dvc_pin, git_commit
    from model_src.memory_plan import require_fits
    from model_src.secret_scan import find_secrets

    cfg = load_config(args.profile, args.set or [])
    require_fits(cfg, args.profile)  # before anything is uploaded or a GPU is held
    root = repo_root()
    image = image_reference(cfg.cluster.image_repository)
    stale = stale_image(SOURCE_SHA256, image, root)
    if stale:  # the run would record this checkout's commit as the code of pods that run other code
        raise CliError(f"refusing to submit: {stale}")
    commit = git_commit(root)
    params = {"config_json": cfg.to_json(), "git_commit": commit, "image": image, "use_cache": not args.no_cache}
    if pipeline == "training":
        data_hash, data_rev = dvc_pin(root)
        params.update(data_hash=data_hash, data_rev=data_rev, data_dir=args.data_dir or
                      f"{cfg.cluster.checkpoint_mount}/data/{data_hash.removesuffix('.dir')}")
    else:
        params.update(data_repo=args.data_repo or _origin_url(root), data_branch=args.data_branch,
                      data_root=f"{cfg.cluster.checkpoint_mount}/data")
    leaks = find_secrets(json.dumps(params))
    if leaks:
        raise CliError(f"refusing to submit: run parameters contain what looks like a secret ({leaks[0][0]}); "
                       f"put it in a Kubernetes Secret and name it under cluster.secret_env")
    return cfg, params, commit


def _origin_url(root: Path) -> str:
    import subprocess

    url = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True).stdout.strip()
    if not url:
        raise CliError("no --data-repo given and this checkout has no `origin` remote: pass the git URL the "
                       "cluster clones to read data.dvc")
    return url


def _kfp_client(args: argparse.Namespace):
    import kfp

    return kfp.Client(host=args.host, namespace=args.namespace)


def cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import submit_run

    cfg, params, commit = _cluster_params(args, args.pipeline)
    job_name = check_run_name(args.run_name or f"{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S')}")
    params["pipeline_run_name"] = job_name
    done = submit_run(_kfp_client(args), pipeline=args.pipeline, profile=args.profile,
                      experiment=args.experiment or cfg.experiment, namespace=args.namespace, job_name=job_name,
                      params=params, git_commit=commit, service_account=cfg.cluster.service_account,
                      kfp_caching=not args.no_cache, overrides=args.set or [])
    print(f"thinkpipe: submitted {job_name}: pipeline version {done.version_name} ({done.version_id}), run {done.run_id}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from pipelines.submit import kfp_cron, schedule_retraining

    cron = kfp_cron(args.cron)  # a bad expression fails before anything is uploaded
    cfg, params, commit = _cluster_params(args, "retraining")
    params["pipeline_run_name"] = args.name
    done = schedule_retraining(_kfp_client(args), profile=args.profile, experiment=args.experiment or cfg.experiment,
                               namespace=args.namespace, job_name=args.name, cron=args.cron, params=params,
                               git_commit=commit, service_account=cfg.cluster.service_account,
                               kfp_caching=not args.no_cache, overrides=args.set or [])
    print(f"thinkpipe: scheduled {args.name} ({cron}): retraining pipeline version {done.version_name}, "
          f"recurring run {done.recurring_run_id}")
    return 0


def _print_summary(setup: LocalSetup, run_name: str, run_id: str, seconds: float) -> None:
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


# ---------------------------------------------------------------------------------------- compile
def cmd_compile(args: argparse.Namespace) -> int:
    from components.image import BASE_IMAGE, SOURCE_SHA256
    from model_src.image_source import stale_image
    from pipelines.compile import PIPELINES, compile_pipeline

    stale = stale_image(SOURCE_SHA256, BASE_IMAGE, repo_root())
    if stale:  # compiling is still useful (review, diff); submitting such an IR is refused
        print(f"thinkpipe: warning: {stale}", file=sys.stderr)
    for name in PIPELINES:
        out = compile_pipeline(Path(args.out_dir) / f"{name}.yaml", args.profile, name)
        print(f"thinkpipe: wrote {out} (Kubernetes settings of profile {args.profile})")
    return 0


# ---------------------------------------------------------------------------------------- lineage
def cmd_lineage(args: argparse.Namespace) -> int:
    from model_src.lineage_report import lineage_report, render_lineage

    tracking_uri, _ = resolve_tracking_uri(args.tracking_uri, Path(args.state_dir or repo_root() / DEFAULT_STATE_DIR))
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    report = lineage_report(args.model)
    print(json.dumps(report, indent=2) if args.json else render_lineage(report))
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from model_src.stages.registry import describe

    print(describe())
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Per-stage, per-GPU memory of a profile, before any GPU is held (model_src/memory_plan.py)."""
    from model_src.config import load_config
    from model_src.memory_plan import plan, render, shortfalls

    cfg = load_config(args.profile, args.set or [])
    gpu_gib = args.gpu_memory or cfg.cluster.gpu_memory_gib
    shape, plans = plan(cfg, prompt_tokens=args.prompt_tokens)
    print(render(shape, plans, gpu_gib))
    short = shortfalls(plans, gpu_gib)
    if short and args.check:
        print("thinkpipe: does not fit:\n  " + "\n  ".join(short), file=sys.stderr)
        return 1
    return 0


def cmd_golden(args: argparse.Namespace) -> int:
    """Run the profile afresh (no cache, a new store) and compare every stage's metrics with the
    committed golden file within the profile's tolerance, or (--record) rewrite that file."""
    import tempfile

    from model_src import golden

    path = Path(args.file) if args.file else golden.golden_path(args.profile)
    tol = golden.tolerance(args.profile) if not args.record else None
    # golden files are CPU fp32 runs: a GPU would train in bf16, which no golden file records
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory(prefix="thinkpipe-golden-") as tmp:
        args.state_dir, args.tracking_uri, args.no_cache = tmp, f"sqlite:///{tmp}/mlflow/mlflow.db", True
        args.run_name = args.run_name or f"golden-{args.profile}"
        setup = _local_setup(args)
        _, run_id, seconds = run_pipeline(args, setup)
        from mlflow.tracking import MlflowClient

        actual = golden.pipeline_stage_metrics(MlflowClient(), setup.experiment_id, run_id)
    if args.record:
        golden.record(path, actual, f"thinkpipe golden --profile {args.profile} --record")
        print(f"thinkpipe: recorded {sum(map(len, actual.values()))} metrics of {len(actual)} stages to {path}")
        return 0
    problems = golden.compare(golden.load(path), actual, tol)
    for line in problems:
        print(f"  {line}")
    print(f"thinkpipe: {args.profile} run ({seconds:.0f} s) vs {path} (learned metrics within relative "
          f"{tol.real_rel:g}, rates within {tol.rate_abs:g}, counts exact): "
          + (f"{len(problems)} differences" if problems else f"all {sum(map(len, actual.values()))} metrics match"))
    return 1 if problems else 0


# ------------------------------------------------------------------------------------ data/curate
def cmd_data(args: argparse.Namespace) -> int:
    from model_src.data.generate import GeneratorConfig, generate_corpus

    counts = generate_corpus(args.out, GeneratorConfig(seed=args.seed), progress=True)
    print(f"thinkpipe: wrote {sum(counts.values())} rows to {args.out} ({counts})")
    if args.check_pin:
        from model_src.lineage import dvc_dir_hash, dvc_pin

        pinned, _ = dvc_pin(Path(args.check_pin).resolve().parent, Path(args.check_pin).name)
        actual = dvc_dir_hash(args.out)
        if actual != pinned:
            raise CliError(f"regenerated {args.out} hashes to {actual}, but {args.check_pin} pins {pinned}: "
                           f"the generator or a pinned library changed; re-pin deliberately with "
                           f"`dvc commit -f data.dvc` and commit data.dvc")
        print(f"thinkpipe: {args.out} matches the pin in {args.check_pin} ({actual})")
    return 0


def cmd_curate(args: argparse.Namespace) -> int:
    from model_src.config import load_config
    from model_src.data.curate import CurationError, curate
    from model_src.data.quality import GateError
    from model_src.data.schema import SPLITS

    cfg = load_config(args.profile, args.set or [])
    out = Path(args.output)
    try:
        report = curate(args.input, {name: out / name for name in (*SPLITS, "report")}, cfg.curate, progress=True,
                        workers=args.workers)
    except CurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GateError as exc:
        print(f"error: {exc}\n(report and Data Docs in {out / 'report'})", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in report.items() if k != "split_by_domain"}, indent=2))
    print(f"kept: {out / 'report' / 'kept.parquet'}  quarantine: {out / 'report' / 'quarantine.parquet'}  "
          f"Data Docs: {out / 'report' / 'data_docs' / 'index.html'}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from model_src.data.ingest import MappingError, ingest

    if args.write_samples:
        from model_src.data.ingest.samples import DOMAIN_CONFIG, write_samples

        mappings = write_samples(args.write_samples)
        print(f"thinkpipe: sample sources and mappings in {args.write_samples}: "
              f"{' '.join(str(m) for m in mappings)}\n(their domain: --set \"{DOMAIN_CONFIG}\")")
        if not args.mapping:
            return 0
    if not args.mapping:
        raise CliError("ingest needs --mapping FILE (one per source; `--write-samples DIR` writes examples)")
    try:
        report = ingest(args.mapping, args.out, progress=True)
    except MappingError as exc:
        raise CliError(str(exc)) from exc
    for name, counts in report["mappings"].items():
        reasons = {k.split("/", 1)[1]: n for k, n in counts.items() if k.startswith("quarantined/")}
        print(f"  {name:12s} {counts['format']:11s} {counts['records']:7d} records -> {counts.get('rows', 0):7d} rows"
              + (f", quarantined {reasons}" if reasons else ""))
    print(f"thinkpipe: {report['rows']} rows in {args.out} ({report['quarantined']} quarantined: "
          f"{Path(args.out) / 'ingest_quarantine.jsonl'}); pin them with `dvc commit` before a run")
    return 0


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


# ------------------------------------------------------------------------------------------ serve
def cmd_serve(args: argparse.Namespace) -> int:
    """vLLM's OpenAI-compatible server, from the serving venv, for the last exported model (or --model)."""
    from model_src import serving

    root = repo_root()
    tracking_uri, _ = resolve_tracking_uri(args.tracking_uri, Path(args.state_dir or root / DEFAULT_STATE_DIR))
    try:
        model = serving.resolve_model(args.model, tracking_uri)
        return serving.serve(model, venv=Path(args.venv or root / serving.DEFAULT_VENV), host=args.host, port=args.port)
    except serving.ServingError as exc:
        raise CliError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thinkpipe", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the training DAG locally with kfp.local")
    add_run_arguments(run)
    run.set_defaults(fn=cmd_run)

    retrain = sub.add_parser("retrain", help="run the DAG only if the data pin changed since the champion was trained")
    add_run_arguments(retrain)
    retrain.add_argument("--rev", default="HEAD", help="git revision whose data.dvc is the latest data (default: HEAD)")
    retrain.set_defaults(fn=cmd_retrain)

    cluster = argparse.ArgumentParser(add_help=False)  # what submit and schedule share
    cluster.add_argument("--host", required=True, help="Kubeflow Pipelines API, e.g. http://ml-pipeline-ui.kubeflow")
    cluster.add_argument("--experiment", help="KFP experiment (default: the profile's experiment)")
    cluster.add_argument("--namespace", help="KFP namespace (multi-user deployments)")
    cluster.add_argument("--profile", default=DEFAULT_CLUSTER_PROFILE, help=f"config profile (default: {DEFAULT_CLUSTER_PROFILE})")
    cluster.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. sft.lr=3e-4")
    cluster.add_argument("--data-repo", help="retraining: git URL holding data.dvc (default: this checkout's origin)")
    cluster.add_argument("--data-branch", default="main", help="retraining: branch whose data.dvc is the latest data")
    cluster.add_argument("--no-cache", action="store_true",
                         help="recompute every stage: a pipeline version without KFP caching (VERSION-nocache), "
                              "and no reuse by thinkpipe's content keys")
    submit = sub.add_parser("submit", parents=[cluster], help="upload the DAG as a new pipeline version and start a run")
    submit.add_argument("--pipeline", choices=("training", "retraining"), default="training")
    submit.add_argument("--run-name", help="KFP run name (default: PROFILE-TIMESTAMP)")
    submit.add_argument("--data-dir", help="training: corpus folder on the checkpoint PVC (default: <mount>/data/<hash>)")
    submit.set_defaults(fn=cmd_submit)
    schedule = sub.add_parser("schedule", parents=[cluster], help="a KFP recurring run of the retraining DAG")
    schedule.add_argument("--cron", required=True, help="when, e.g. '0 3 * * *' (5 fields, or 6 with seconds first)")
    schedule.add_argument("--name", default="thinkpipe-retraining", help="recurring run name")
    schedule.set_defaults(fn=cmd_schedule, data_dir=None)

    comp = sub.add_parser("compile", help="compile the DAG to KFP IR YAML")
    comp.add_argument("--out-dir", default=str(COMPILED_DIR), help="where training.yaml and retraining.yaml go")
    comp.add_argument("--profile", default=DEFAULT_CLUSTER_PROFILE,
                      help=f"profile whose `cluster` section sets resources, volumes and secrets (default: {DEFAULT_CLUSTER_PROFILE})")
    comp.set_defaults(fn=cmd_compile)

    lin = sub.add_parser("lineage", help="print the chain from a registered model version back to its data")
    lin.add_argument("model", help="NAME, NAME/VERSION or NAME@alias")
    lin.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local store)")
    lin.add_argument("--state-dir", help=f"where the local store lives (default: {DEFAULT_STATE_DIR}/)")
    lin.add_argument("--json", action="store_true", help="machine-readable output")
    lin.set_defaults(fn=cmd_lineage)

    pln = sub.add_parser("plan", help="per-stage, per-GPU memory of a profile (weights, states, activations, KV cache)")
    pln.add_argument("--profile", default=DEFAULT_CLUSTER_PROFILE, help=f"config profile (default: {DEFAULT_CLUSTER_PROFILE})")
    pln.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. sft.zero_stage=3")
    pln.add_argument("--gpu-memory", type=float, default=0.0,
                     help="GiB per GPU (default: the profile's cluster.gpu_memory_gib, 80 for an H100)")
    pln.add_argument("--prompt-tokens", type=int, default=1024, help="assumed prompt length of rollouts and evaluation")
    pln.add_argument("--check", action="store_true",
                     help="exit 1 when a stage the cluster layout gives GPUs does not fit (what compile and submit refuse)")
    pln.set_defaults(fn=cmd_plan)

    stg = sub.add_parser("stages", help="list the pipeline's stages: config sections, inputs, caching")
    stg.set_defaults(fn=cmd_stages)

    gold = sub.add_parser("golden", help="run a profile afresh and compare every stage's metrics with tests/golden/",
                          description="Runs the DAG with no cache against a fresh MLflow store in a temporary folder.")
    gold.add_argument("--profile", default="small", help="config profile under configs/ (default: small)")
    gold.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (a golden file records one config)")
    gold.add_argument("--data-dir", help="raw corpus folder (default: data/raw)")
    gold.add_argument("--run-name", help="name of the pipeline run (default: golden-PROFILE)")
    gold.add_argument("--record", action="store_true", help="rewrite the golden file from this run instead")
    gold.add_argument("--file", help="golden file (default: tests/golden/PROFILE.json)")
    gold.set_defaults(fn=cmd_golden)

    data = sub.add_parser("data", help="generate the raw corpus deterministically")
    data.add_argument("--out", default="data/raw")
    data.add_argument("--seed", type=int, default=1234)
    data.add_argument("--check-pin", metavar="DVC_FILE", help="fail unless the result hashes to this .dvc file's pin")
    data.set_defaults(fn=cmd_data)

    cur = sub.add_parser("curate", help="curate a raw corpus folder outside the pipeline")
    cur.add_argument("--input", required=True)
    cur.add_argument("--output", required=True)
    cur.add_argument("--profile", default="small")
    cur.add_argument("--workers", type=int, default=1,
                     help="processes scanning the parts (curate.scan_tasks) side by side, as the DAG's fan-out does")
    cur.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="config override, e.g. curate.domains={receipts: {verifier: ocr, answer_type: text}}")
    cur.set_defaults(fn=cmd_curate)

    ing = sub.add_parser("ingest", help="turn your own corpus (HF datasets, parquet, LLaVA, WebDataset, JSONL) "
                                        "into the raw row schema, by mapping files")
    ing.add_argument("--mapping", action="append", metavar="FILE",
                     help="a mapping file (format, source, domain, fields: model_src/data/ingest/mapping.py); repeat")
    ing.add_argument("--out", default="data/raw", help="the raw corpus folder to write shards into (default: data/raw)")
    ing.add_argument("--write-samples", metavar="DIR", help="write a small sample of every format and its mapping file")
    ing.set_defaults(fn=cmd_ingest)

    srv = sub.add_parser("serve", help="serve the last exported model with vLLM's OpenAI-compatible server (.venv-serve)")
    srv.add_argument("--model", help="exported folder, NAME/VERSION or NAME@alias (default: the newest exported version)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback only)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--venv", help="the serving venv (default: .venv-serve, made by `make serve-venv`)")
    srv.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local store)")
    srv.add_argument("--state-dir", help=f"where the local store lives (default: {DEFAULT_STATE_DIR}/)")
    srv.set_defaults(fn=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = build_parser().parse_args(argv)
    from model_src.config import ConfigError
    from model_src.lineage import LineageError
    from model_src.tracking import TrackingUnavailable
    from pipelines.submit import SubmitError

    try:
        return args.fn(args)
    except (ConfigError, CliError, LineageError, TrackingUnavailable, SubmitError) as exc:
        print(f"thinkpipe: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
