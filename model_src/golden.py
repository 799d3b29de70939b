"""Golden metrics: what every stage of a profile's pipeline measured, recorded once and compared after.

A refactor that claims to change nothing shows it here. `record` writes the non-timing metrics of
every stage run of one pipeline run to a JSON file (committed under tests/golden/); `compare` lists
every metric that moved beyond the profile's tolerance, appeared or vanished. Counts and
configuration-derived values must be equal; learned metrics may move as far as another CPU's
float rounding moves them (`TOLERANCES`, measured by bench/golden_spread.py), and no further. The
tiny profile is checked by the default test run against its shared DAG run; `thinkpipe golden
--profile small` runs the small profile afresh and checks it (`--record` rewrites the file instead).
Golden runs are CPU runs in fp32: on a GPU host they are pinned to the CPU.
"""

from __future__ import annotations

import json
import math
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from model_src import REPO_ROOT

GOLDEN_DIR = REPO_ROOT / "tests" / "golden"

# The CPU code paths one x86 machine can reach by environment switches. Another CPU takes one of them
# (an AMD EPYC without AVX-512 runs ATen's and MKL's AVX2 kernels), and each rounds float32
# reductions its own way: ATen's vector width (ATEN_CPU_CAPABILITY), MKL's GEMM kernels (MKL_CBWR,
# its reproducibility switch) and oneDNN's convolutions (ONEDNN_MAX_CPU_ISA). bench/golden_spread.py
# runs a profile under each and measures how far its metrics move.
CODE_PATHS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


@dataclass(frozen=True)
class Tolerance:
    """How far a learned metric may move and still be the same computation on another CPU.

    Counts and configuration-derived values (rows, parameters, vocabulary, learning rate, packing)
    are compared exactly whatever the tolerance. Rates (accuracies, shares, mean rewards: fractions of
    discrete outcomes, and their differences) may move by `rate_abs`; real-valued metrics (losses,
    norms, lengths, tier and rollout counts the model's answers decide) by `real_rel` of their size,
    or `real_abs` where they sit near zero. A profile whose metrics no useful tolerance can hold
    across code paths pins one instead (`code_path`, with a fixed thread count): its golden runs do
    the same arithmetic on any x86 CPU, and compare to within rounding.
    """

    real_rel: float
    rate_abs: float
    real_abs: float = 1e-9
    code_path: str = "native"  # the CODE_PATHS entry golden runs of the profile take; native = unpinned
    threads: int = 0  # OMP_NUM_THREADS of a pinned path's runs (reductions split by thread count)


# Per profile, from `bench/golden_spread.py` under every CODE_PATHS entry on an Intel Xeon with
# AVX-512 (bench/RESULTS.md, "Golden metrics across CPU code paths", 2026-12-07):
# - tiny: real metrics moved at most 1.1e-6 relative (sft/grad_norm, avx2 path; the 1.2e-6 an AMD EPYC
#   showed), rates not at all; the learning rate x 1.1 moves sft's losses by 2e-3 to 2e-2. 1e-4 sits
#   90x above the one and 20x below the other. A rate may move by one rollout of rlcs's 28 (a
#   near-tie argmax can flip, though none did).
# - small: training carries the rounding into other answers. Across the three paths digits' accuracy
#   was 0.444 / 0.167 / 0.356 and SFT's grad norm moved 17%: a tolerance that holds that catches
#   nothing. So its golden runs pin the portable path (ATen's scalar kernels, MKL's SSE2 branch,
#   oneDNN's SSE4.1 convolutions, 2 threads), which cost 1.32x the native run's time (329 s vs 250 s).
TOLERANCES: dict[str, Tolerance] = {
    "tiny": Tolerance(real_rel=1e-4, rate_abs=0.05),
    "small": Tolerance(real_rel=1e-6, rate_abs=1e-9, code_path="default", threads=2),
}


def tolerance(profile: str) -> Tolerance:
    if profile not in TOLERANCES:
        raise KeyError(f"no golden tolerance for profile {profile!r}: measure one with bench/golden_spread.py "
                       f"and add it to model_src.golden.TOLERANCES (known: {', '.join(sorted(TOLERANCES))})")
    return TOLERANCES[profile]


def code_path_environment(code_path: str, threads: int = 0) -> dict[str, str]:
    """The environment switches of one CODE_PATHS entry (and a fixed thread count)."""
    if code_path not in CODE_PATHS:
        raise KeyError(f"unknown CPU code path {code_path!r}: one of {', '.join(CODE_PATHS)}")
    return {**CODE_PATHS[code_path], **({"OMP_NUM_THREADS": str(threads)} if threads else {})}


# Metrics fixed by the data and the configuration: no CPU moves them.
_EXACT_STAGES = ("curate",)
_EXACT_METRICS = ("num_examples", "num_parameters", "vocab_size", "lr", "packing_efficiency", "rows_rejected",
                  "num_samples", "exported_files", "reward_timeouts")
_RATE = re.compile(r"^(accuracy|blind_accuracy|visual_gain|pass_at_\d+|sampled_accuracy|format_ok|forced_answer"
                   r"|stage_gain|(first_|final_|mean_)?reward_(mean|std)|clip_frac|expansion_cap_hit$)"
                   r"|(_share|_rate)$")


def metric_kind(stage: str, metric: str) -> str:
    """"exact", "rate" or "real": how `compare` treats `stage/metric` (see Tolerance).

    >>> [metric_kind("curate", "kept/ocr"), metric_kind("sft", "lr"), metric_kind("sft", "rejected/several_boxes")]
    ['exact', 'exact', 'exact']
    >>> [metric_kind("evaluate", "accuracy_sft/ocr"), metric_kind("rlcs", "effective_group_share")]
    ['rate', 'rate']
    >>> [metric_kind("sft", "final_loss"), metric_kind("rlcs", "tier_3"), metric_kind("rlcs", "expansion_cap_hits")]
    ['real', 'real', 'real']
    """
    base = metric.split("/")[0]
    if stage in _EXACT_STAGES or base in _EXACT_METRICS or base == "rejected":
        return "exact"
    return "rate" if _RATE.search(base) else "real"


def cpu_name() -> str:
    """The CPU's model name (what a golden file was recorded on), from /proc/cpuinfo or platform."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def record(path: Path, stages: dict[str, dict[str, float]], source: str, code_path: str = "native") -> None:
    """Write `stages` with where they came from: the command, the CPU and the code path it took."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"source": source, "cpu": cpu_name(), "code_path": code_path, "stages": stages},
                               indent=1, sort_keys=True) + "\n")


def load(path: Path) -> dict[str, dict[str, float]]:
    return load_file(path)["stages"]


def load_file(path: Path) -> dict:
    """The whole golden file: stages, source, cpu and code_path (native for files recorded before it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no golden metrics at {path}: record them with `thinkpipe golden --record`")
    data = json.loads(path.read_text())
    data.setdefault("code_path", "native")
    return data


def deviation(kind: str, want: float, got: float) -> float:
    """How far `got` is from `want`: absolute for a rate, relative to the larger size otherwise."""
    if kind == "rate":
        return abs(got - want)
    return abs(got - want) / max(abs(want), abs(got), 1e-12)


def within(kind: str, want: float, got: float, tol: Tolerance | None = None) -> bool:
    """Whether `got` is `want` for a metric of `kind` (exact needs no tolerance)."""
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    if kind == "exact":  # integers exactly; a configured float (the learning rate) to its last bits
        return deviation(kind, want, got) <= 1e-12
    if kind == "rate":
        return deviation(kind, want, got) <= tol.rate_abs + 1e-12
    return abs(got - want) <= max(tol.real_rel * max(abs(want), abs(got)), tol.real_abs)


def compare(golden: dict[str, dict[str, float]], actual: dict[str, dict[str, float]], tol: Tolerance) -> list[str]:
    """Every difference between two {stage: {metric: value}} maps beyond `tol`, one line each, sorted.

    >>> tol = Tolerance(real_rel=1e-3, rate_abs=0.05)
    >>> compare({"sft": {"loss": 1.0, "lr": 1e-4}}, {"sft": {"loss": 1.0005, "lr": 1e-4}}, tol)
    []
    >>> compare({"sft": {"loss": 1.0, "num_examples": 3.0}}, {"sft": {"loss": 1.5}, "rlcs": {}}, tol)
    ['rlcs: stage not in the golden file', 'sft/loss: golden 1 != 1.5 (real, relative 0.33)', 'sft/num_examples: missing (golden 3)']
    >>> compare({"evaluate": {"accuracy/ocr": 0.2}}, {"evaluate": {"accuracy/ocr": 0.3}}, tol)
    ['evaluate/accuracy/ocr: golden 0.2 != 0.3 (rate, absolute 0.1)']
    """
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
            else:
                kind = metric_kind(stage, metric)
                if not within(kind, want[metric], got[metric], tol):
                    problems.append(f"{stage}/{metric}: golden {want[metric]:.6g} != {got[metric]:.6g} "
                                    f"({_deviation(kind, want[metric], got[metric])})")
    return problems


def _deviation(kind: str, want: float, got: float) -> str:
    return f"{kind}, {'absolute' if kind == 'rate' else 'relative'} {deviation(kind, want, got):.2g}"


def spread(golden: dict[str, dict[str, float]], actual: dict[str, dict[str, float]]) -> dict:
    """The largest deviation of each kind between two runs' metrics present in both:
    {"real": (max relative, metric), "rate": (max absolute, metric), "exact_diffs": count}.

    >>> spread({"sft": {"loss": 2.0, "lr": 1.0}, "evaluate": {"accuracy/ocr": 0.5}},
    ...        {"sft": {"loss": 1.998, "lr": 1.0}, "evaluate": {"accuracy/ocr": 0.25}})
    {'real': (0.001, 'sft/loss'), 'rate': (0.25, 'evaluate/accuracy/ocr'), 'exact_diffs': 0}
    """
    worst = {"real": (0.0, ""), "rate": (0.0, "")}
    exact_diffs = 0
    for stage in sorted(set(golden) & set(actual)):
        for metric in sorted(set(golden[stage]) & set(actual[stage])):
            want, got = golden[stage][metric], actual[stage][metric]
            kind = metric_kind(stage, metric)
            if kind == "exact":
                exact_diffs += not within("exact", want, got)
                continue
            size = deviation(kind, want, got)
            if size > worst[kind][0]:
                worst[kind] = (round(size, 12), f"{stage}/{metric}")
    return {**worst, "exact_diffs": exact_diffs}
