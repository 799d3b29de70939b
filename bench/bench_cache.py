"""Stage cache benchmark: a first `thinkpipe run --profile tiny` against a fresh MLflow store, then
the same run unchanged, timed side by side in one process. Goal: second / first <= 0.10.

    .venv/bin/python bench/bench_cache.py [--profile tiny] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_run(state: Path, name: str, profile: str) -> float:
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "--profile", profile, "--run-name", name,
           "--state-dir", str(state), "--tracking-uri", f"sqlite:///{state / 'mlflow' / 'mlflow.db'}"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state dir")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="thinkpipe-bench-"))
    try:
        first = timed_run(state, "bench-first", args.profile)
        second = timed_run(state, "bench-unchanged", args.profile)
    finally:
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)
    ratio = second / first
    print(f"profile {args.profile}: first run {first:.1f} s, unchanged re-run {second:.1f} s")
    print(f"ratio unchanged/first = {ratio:.3f} (goal <= 0.10: {'met' if ratio <= 0.10 else 'NOT met'})")


if __name__ == "__main__":
    main()
