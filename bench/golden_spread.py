"""How far a profile's golden metrics move between CPU code paths, against how far a real change moves them.

Floating-point results of the same code differ across CPUs: ATen's vector width, MKL's kernels and
oneDNN's ISA each round float32 reductions their own way, and training carries the difference on.
One x86 machine reaches the code paths other CPUs take by environment switches
(`model_src.golden.CODE_PATHS`: native, avx2, default). This script runs the profile afresh under
each (`thinkpipe golden --record` into a scratch folder), optionally adds arms with a config change
that leaves every count equal (`--change sft.lr=0.0022`), and prints, per metric class, the largest
deviation from the committed golden file next to the tolerance `model_src.golden` applies:

- the code-path arms must fit inside the tolerance (else `make test` fails on another CPU);
- the change arms must not (else the golden check would miss a real change).

    .venv/bin/python bench/golden_spread.py --profile tiny --jobs 2 --change sft.lr=0.0022
    .venv/bin/python bench/golden_spread.py --profile small --change sft.lr=0.0011

A profile that pins a code path (`small`) is compared only on that path: there the path's arm must
match and the change arms must not; the other paths' arms show how far its metrics would move.

Exit status 1 when a code path falls outside the tolerance or a change inside it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_src import golden  # noqa: E402


def run_arm(profile: str, out: Path, code_path: str, overrides: list[str], threads: int | None) -> tuple[dict, float]:
    """({stage: {metric: value}}, seconds) of one fresh run of `profile` on one CPU code path."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "pipelines.cli", "golden", "--profile", profile, "--record", "--file", str(out),
           "--run-name", f"spread-{out.stem}", "--code-path", code_path]
    for item in overrides:
        cmd += ["--set", item]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{out.stem} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return golden.load(out), time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--paths", default=",".join(golden.CODE_PATHS),
                    help=f"code paths to run, comma-separated (default: all of {', '.join(golden.CODE_PATHS)})")
    ap.add_argument("--change", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra arm on the profile's own path with this override (repeatable: one arm each)")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS of every arm not on a pinned path (default: 1 with --jobs > 1, else torch's own)")
    ap.add_argument("--jobs", type=int, default=1, help="arms run at once (each then on one thread)")
    ap.add_argument("--keep", metavar="DIR", help="keep each arm's metrics as DIR/ARM.json")
    args = ap.parse_args(argv)

    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(golden.CODE_PATHS))
    if unknown:
        ap.error(f"unknown code path(s) {unknown}: choose from {sorted(golden.CODE_PATHS)}")
    reference = golden.load(golden.golden_path(args.profile))
    tolerance = golden.tolerance(args.profile)
    threads = args.threads or (1 if args.jobs > 1 else None)
    arms = [(f"path-{p}", p, []) for p in paths]
    arms += [(f"change-{c}", tolerance.code_path, [c]) for c in args.change]

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="thinkpipe-spread-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{args.profile}: {len(arms)} arms, {args.jobs} at a time, threads {threads or 'default'}; "
          f"torch {__import__('torch').__version__}; CPU {golden.cpu_name()}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {name: pool.submit(run_arm, args.profile, folder / f"{name}.json", path, overrides, threads)
                   for name, path, overrides in arms}
        results = {name: f.result() for name, f in futures.items()}

    ok = True
    pinned = tolerance.code_path != "native"
    print(f"\ntolerance ({args.profile}): real metrics relative {tolerance.real_rel:g}, "
          f"rates absolute {tolerance.rate_abs:g}, counts and configuration exact"
          + (f"; golden runs pin the {tolerance.code_path} code path, {tolerance.threads} threads: the other "
             f"paths show why" if pinned else ""))
    print(f"{'arm':<34} {'s':>6} {'exact diffs':>11} {'max rel (real)':>16} {'max abs (rate)':>16}  verdict")
    for name, (metrics, seconds) in results.items():
        spread = golden.spread(reference, metrics)
        outside = golden.compare(reference, metrics, tolerance)
        worst_real = spread["real"]
        worst_rate = spread["rate"]
        if name.startswith("change-"):  # a real change: the check must report it
            verdict, held = ("caught", True) if outside else ("MISSED", False)
        elif pinned and name != f"path-{tolerance.code_path}":  # a path the profile's golden runs never take
            verdict, held = ("within" if not outside else "outside (unpinned: not compared)"), True
        else:  # a path the check must accept
            verdict, held = ("within", True) if not outside else ("OUTSIDE", False)
        ok &= held
        print(f"{name:<34} {seconds:>6.0f} {spread['exact_diffs']:>11} "
              f"{worst_real[0]:>9.2g} {worst_real[1][:6]:>6} {worst_rate[0]:>9.2g} {worst_rate[1][:6]:>6}  {verdict}")
        print(f"{'':<34}   worst real: {worst_real[1] or '-'}; worst rate: {worst_rate[1] or '-'}")
        for line in outside[:8]:
            print(f"{'':<34}   {line}")
    if not args.keep:
        for file in folder.glob("*.json"):
            file.unlink()
        folder.rmdir()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
