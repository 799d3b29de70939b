"""Compile the DAGs to KFP IR YAML with a profile's Kubernetes settings. The committed files are
build outputs: a test fails when they are out of date (run `make compile`)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CLUSTER_PROFILE = "glm4v-9b"
COMPILED_DIR = Path(__file__).resolve().parent / "compiled"
PIPELINES = ("training", "retraining")


def build_pipeline(pipeline: str, profile: str = DEFAULT_CLUSTER_PROFILE, kfp_caching: bool = True,
                   overrides: list[str] | tuple[str, ...] = ()):
    """The pipeline function `pipeline` carrying `profile`'s cluster settings, with `overrides`
    (`--set key=value`) applied (and no KFP caching with `kfp_caching=False`)."""
    from model_src.config import load_config
    from model_src.memory_plan import require_fits

    cfg = load_config(profile, list(overrides))
    require_fits(cfg, profile)  # no DAG for a layout whose stages would not fit their GPUs
    cluster = cfg.cluster
    if pipeline == "training":
        from pipelines.training import build_training_pipeline

        return build_training_pipeline(cluster, kfp_caching)
    if pipeline == "retraining":
        from pipelines.retraining import build_retraining_pipeline

        return build_retraining_pipeline(cluster, kfp_caching)
    raise ValueError(f"unknown pipeline {pipeline!r} (known: {', '.join(PIPELINES)})")


def compile_pipeline(output: Path, profile: str = DEFAULT_CLUSTER_PROFILE, pipeline: str = "training",
                     kfp_caching: bool = True, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    from kfp import compiler

    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(pipeline, profile, kfp_caching, overrides), package_path=str(output))
    return output
