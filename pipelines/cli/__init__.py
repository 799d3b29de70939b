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
import os
import sys

from model_src.golden import CODE_PATHS  # light: no torch
from pipelines.cli.audit import cmd_lineage, cmd_stages
from pipelines.cli.cluster import cmd_compile, cmd_plan, cmd_schedule, cmd_submit
from pipelines.cli.common import DEFAULT_STATE_DIR, CliError, repo_root, resolve_tracking_uri
from pipelines.cli.data import cmd_curate, cmd_data, cmd_ingest
from pipelines.cli.local_run import add_run_arguments, cmd_golden, cmd_retrain, cmd_run
from pipelines.cli.serve import cmd_serve
from pipelines.compile import COMPILED_DIR, DEFAULT_CLUSTER_PROFILE  # light: kfp is imported inside

__all__ = ["DEFAULT_STATE_DIR", "CliError", "build_parser", "main", "repo_root", "resolve_tracking_uri"]


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
    gold.add_argument("--code-path", choices=tuple(CODE_PATHS),
                      help="CPU code path of the run (model_src.golden.CODE_PATHS; default: the one the profile "
                           "pins, else the CPU's own)")
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

