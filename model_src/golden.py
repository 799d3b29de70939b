"""Golden metrics: what every stage of a profile's pipeline measured, recorded once and compared after.

A refactor that claims to change nothing shows it here. `record` writes the non-timing metrics of
every stage run of one pipeline run to a JSON file (committed under tests/golden/); `compare` lists
every metric that moved, appeared or vanished. The tiny profile is checked by the default test run
against its shared DAG run; `thinkpipe golden --profile small` runs the small profile afresh and
checks it (`--record` rewrites the file instead).

    >>> compare({"sft": {"loss": 1.0}}, {"sft": {"loss": 1.0 + 1e-12}})
    []
    >>> compare({"sft": {"loss": 1.0, "steps": 3.0}}, {"sft": {"loss": 1.5}, "rlcs": {}})
    ['rlcs: stage not in the golden file', 'sft/loss: golden 1 != 1.5 (relative 0.5)', 'sft/steps: missing (golden 3)']
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from model_src import REPO_ROOT

GOLDEN_DIR = REPO_ROOT / "tests" / "golden"
# Runs on one machine are bit-for-bit equal, but another x86 model (another SIMD path in a float32
# reduction) reports a loss a few 1e-7 off while the trained weights, and every later stage's
# metrics, are unchanged (seen: pretrain/SFT losses on an AMD EPYC vs the recording machine). A real
# behaviour change moves metrics by far more.
REL_TOL = 1e-6


def is_timing(metric: str) -> bool:
    """Wall-clock and machine-load metrics: they differ between two runs of the same work."""
    return (metric.startswith("system/") or "seconds" in metric or metric.endswith("per_s")
            or metric.removeprefix("steady_") in ("model_tflops", "mfu"))


def pipeline_stage_metrics(client, experiment_id: str, pipeline_run: str) -> dict[str, dict[str, float]]:
    """{stage: {metric: value}} of the stage runs nested under one pipeline run, timing left out."""
    from model_src.names import PIPELINE_RUN_TAG, STAGE_TAG

    runs = client.search_runs([experiment_id], f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run}'")
    stages: dict[str, dict[str, float]] = {}
    for run in runs:
        stage = run.data.tags.get(STAGE_TAG, "")
        if stage and stage != "pipeline":
            stages[stage] = {k: v for k, v in sorted(run.data.metrics.items()) if not is_timing(k)}
    if not stages:
        raise LookupError(f"no stage runs of pipeline run {pipeline_run!r} in experiment {experiment_id}")
    return dict(sorted(stages.items()))


def golden_path(profile: str) -> Path:
    return GOLDEN_DIR / f"{profile}.json"


def record(path: Path, stages: dict[str, dict[str, float]], source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"source": source, "stages": stages}, indent=1, sort_keys=True) + "\n")


def load(path: Path) -> dict[str, dict[str, float]]:
    if not path.is_file():
        raise FileNotFoundError(f"no golden metrics at {path}: record them with `thinkpipe golden --record`")
    return json.loads(path.read_text())["stages"]


def compare(golden: dict[str, dict[str, float]], actual: dict[str, dict[str, float]],
            rel_tol: float = REL_TOL) -> list[str]:
    """Every difference between two {stage: {metric: value}} maps, one line each, sorted."""
    problems = []
    for stage in sorted(set(golden) | set(actual)):
        if stage not in golden:
            problems.append(f"{stage}: stage not in the golden file")
            continue
        if stage not in actual:
            problems.append(f"{stage}: stage missing from the run")
            continue
        want, got = golden[stage], actual[stage]
        for metric in sorted(set(want) | set(got)):
            if metric not in got:
                problems.append(f"{stage}/{metric}: missing (golden {want[metric]:.6g})")
            elif metric not in want:
                problems.append(f"{stage}/{metric}: new metric ({got[metric]:.6g})")
            elif not (math.isclose(want[metric], got[metric], rel_tol=rel_tol, abs_tol=1e-12)
                      or (math.isnan(want[metric]) and math.isnan(got[metric]))):
                rel = abs(got[metric] - want[metric]) / max(abs(want[metric]), 1e-12)
                problems.append(f"{stage}/{metric}: golden {want[metric]:.6g} != {got[metric]:.6g} (relative {rel:.2g})")
    return problems
