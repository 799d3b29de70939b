"""The cluster: `submit` and `schedule` (Kubeflow Pipelines), `compile` (the IR) and `plan` (GPU memory)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipelines.cli.common import CliError, check_run_name, repo_root


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
