"""What the stages that may run as a distributed job (pretrain, sft, rlcs, evaluate) share: where
their work runs.

Locally, and on a cluster without a training job, the stage's `work` runs in the stage's own
process. With `cluster.training_job.enabled`, the stage's pod only launches and watches a
multi-node job (model_src/cluster/training_job.py) whose every process calls the same `work`
(model_src/cluster/job_main.py), found here by the stage's name.
"""

from __future__ import annotations

import importlib
from typing import Callable

from model_src.lineage import Lineage
from model_src.stages.registry import stage as registry_stage
from model_src.stages.runner import StageContext, run_stage


def stage_work(stage: str) -> Callable[[StageContext], dict[str, float]]:
    """The `work` function of a training stage's module (model_src/stages/<stage>.py)."""
    if not registry_stage(stage).training_job:
        raise ValueError(f"stage {stage!r} is not a training stage")
    return importlib.import_module(f"model_src.stages.{stage}").work


def run_training_stage(stage: str, *, lineage: str | Lineage, inputs: dict[str, str],
                       outputs: dict[str, str], use_cache: bool = True) -> dict[str, float]:
    local_work = stage_work(stage)

    def work(ctx: StageContext) -> dict[str, float]:
        if ctx.cfg.cluster.training_job.enabled:
            from model_src.cluster.training_job import run_training_job

            return run_training_job(ctx)
        return local_work(ctx)

    return run_stage(stage, lineage=lineage, inputs=inputs, outputs=outputs, work=work, use_cache=use_cache)
