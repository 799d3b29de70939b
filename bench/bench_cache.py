"""Stage cache benchmark: a first `thinkpipe run` against a fresh MLflow store and KFP cache, then
the same run unchanged, timed side by side in one process, for each profile asked for.

Goals (issue "one stage, one file"): on `small`, the unchanged re-run takes <= 0.05 x the first
run; on `tiny`, the re-run starts no process for a cached stage (only `init`, which opens the
pipeline's MLflow run, and the `finish` exit handler run) and its absolute time is reported.

    .venv/bin/python bench/bench_cache.py [--profile tiny] [--profile small] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_src.stages.registry import STAGES  # noqa: E402

GOAL_RATIO = {"small": 0.05}


def timed_run(state: Path, name: str, profile: str) -> tuple[float, list[str]]:
    """(seconds, the tasks kfp.local started a process for) of one `thinkpipe run`."""
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "--profile", profile, "--run-name", name,
           "--state-dir", str(state), "--tracking-uri", f"sqlite:///{state / 'mlflow' / 'mlflow.db'}"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    elapsed = time.monotonic() - started
    output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{output[-4000:]}")
    return elapsed, re.findall(r"Executing task '([\w-]+)'", output)


def bench(profile: str, keep: bool) -> bool:
    state = Path(tempfile.mkdtemp(prefix=f"thinkpipe-bench-{profile}-"))
    try:
        first, _ = timed_run(state, "bench-first", profile)
        second, started = timed_run(state, "bench-unchanged", profile)
    finally:
        if not keep:
            shutil.rmtree(state, ignore_errors=True)
    cached = {s.name for s in STAGES if s.kfp_caching}
    restarted = sorted(cached & set(started))
    ratio = second / first
    print(f"profile {profile}: first run {first:.1f} s, unchanged re-run {second:.1f} s, ratio {ratio:.3f}")
    print(f"  processes started by the re-run: {', '.join(started)}; cached stages among them: "
          f"{', '.join(restarted) or 'none'}")
    met = not restarted
    if profile in GOAL_RATIO:
        met = met and ratio <= GOAL_RATIO[profile]
        print(f"  goal ratio <= {GOAL_RATIO[profile]}: {'met' if ratio <= GOAL_RATIO[profile] else 'NOT met'}")
    print(f"  goal no process for a cached stage: {'met' if not restarted else 'NOT met'}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", action="append", help="profile to measure (repeatable; default: tiny)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state dirs")
    args = parser.parse_args()
    results = [bench(profile, args.keep) for profile in args.profile or ["tiny"]]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
