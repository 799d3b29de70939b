"""Compile the training DAG to KFP IR YAML. The committed file is a build output: a test fails
when it is out of date (run `make compile`)."""

from __future__ import annotations

from pathlib import Path


def compile_pipeline(output: Path) -> Path:
    from kfp import compiler

    from pipelines.training import training_pipeline

    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, package_path=str(output))
    return output
