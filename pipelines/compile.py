"""Compile the training DAG to KFP IR YAML with a profile's Kubernetes settings. The committed
file is a build output: a test fails when it is out of date (run `make compile`)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CLUSTER_PROFILE = "glm4v-9b"


def compile_pipeline(output: Path, profile: str = DEFAULT_CLUSTER_PROFILE) -> Path:
    from kfp import compiler

    from model_src.config import load_config
    from pipelines.training import build_training_pipeline

    cluster = load_config(profile).cluster
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_training_pipeline(cluster), package_path=str(output))
    return output
