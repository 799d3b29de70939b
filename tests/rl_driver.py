"""Run the GRPO loop on a saved tiny policy; rank 0 writes the weights, curriculum and metrics.

    python -m torch.distributed.run --nproc_per_node 2 tests/rl_driver.py POLICY OUT [KEY=VALUE ...]

KEY=VALUE are rlcs overrides (e.g. rlcs.deepspeed=true rlcs.zero_stage=2). With the environment
variables RL_DRIVER_CHECKPOINTS (a folder) the loop checkpoints there and resumes from it, and with
RL_DRIVER_CRASH_AFTER=N every process dies right after iteration N is logged (as if killed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from model_src.train.distributed import parse_local_rank  # noqa: E402
from tests.test_rl_distributed import rl_rows, train_policy  # noqa: E402


def main(argv: list[str]) -> None:
    import faulthandler

    # a collective that never completes hangs every rank: print where each one waits, then die
    faulthandler.dump_traceback_later(float(os.environ.get("RL_DRIVER_HANG_SECONDS", "600")), exit=True)
    policy, out, *overrides = parse_local_rank(argv)
    crash_after = int(os.environ.get("RL_DRIVER_CRASH_AFTER", "0"))
    checkpoints = os.environ.get("RL_DRIVER_CHECKPOINTS")

    def on_log(metrics: dict, iteration: int) -> None:
        if crash_after and iteration + 1 == crash_after:
            os._exit(3)  # die like a killed process: no cleanup, no final save

    result = train_policy(policy, rl_rows(), overrides, on_log=on_log,
                          checkpoint_dir=Path(checkpoints) if checkpoints else None)
    if torch.distributed.get_rank() == 0 if torch.distributed.is_initialized() else True:
        torch.save(result, Path(out) / "result.pt")


if __name__ == "__main__":
    main(sys.argv[1:])
