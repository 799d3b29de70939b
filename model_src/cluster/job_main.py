"""What every process of a training job runs: `torchrun -m model_src.cluster.job_main SPEC`.

Reads the hand-over spec the launching stage wrote (model_src/cluster/training_job.py) and calls
the same stage function a local run calls in-process. Rank 0 logs into the stage's MLflow run and
writes the outputs and metrics; the other ranks only train (DeepSpeed shards, gradients). When
rank 0 fails (its tracking server gone, after MLflow's retries), its exit makes torchrun stop every
other process of the node at once, instead of leaving them in a collective until its timeout; on a
multi-node job, the trainer's JobSet fails the job when one node fails.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import mlflow

    from model_src.lineage import Lineage, RunScope
    from model_src.stages.runner import StageContext
    from model_src.stages.training import stage_work
    from model_src.tracking import retry_policy, stop_retrying, tracking_gave_up

    spec_path = Path(argv[0])
    spec = json.loads(spec_path.read_text())
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    is_main = rank == 0
    print(f"job_main: rank {rank}/{world} runs stage {spec['stage']}", flush=True)
    ctx = StageContext(spec["stage"], Lineage.from_json(spec["lineage"]), RunScope.from_json(spec["scope"]),
                       {k: Path(v) for k, v in spec["inputs"].items()}, {k: Path(v) for k, v in spec["outputs"].items()},
                       spec["run_id"], Path(spec["checkpoint_dir"]), is_main=is_main)
    if is_main:
        for path in ctx.outputs.values():
            path.mkdir(parents=True, exist_ok=True)
        mlflow.start_run(run_id=spec["run_id"])  # the launching stage's run: one run per stage
    try:
        metrics = stage_work(ctx.stage)(ctx)
    except Exception as exc:
        if tracking_gave_up(exc):  # rank 0 ends now; torchrun then stops the other ranks in their collectives
            print(f"job_main: rank {rank}: the MLflow tracking server stopped answering ({retry_policy()} spent); "
                  f"ending the job, its checkpoints kept", flush=True)
            stop_retrying()
        raise
    if is_main:
        tmp = spec_path.with_name("metrics.json.tmp")
        tmp.write_text(json.dumps({k: float(v) for k, v in metrics.items()}))
        tmp.rename(spec_path.with_name("metrics.json"))  # the launcher reads it only when complete
        if ctx.result_tags:
            mlflow.set_tags(ctx.result_tags)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
