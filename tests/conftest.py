"""Shared fixtures. The tiny pipeline runs once per session through the real `thinkpipe run`
(kfp.local SubprocessRunner, a real SQLite MLflow store) and its MLflow state is shared."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from model_src.gpu_check import digit_share  # noqa: F401 (the tests' graded RL reward)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # tests talk to MLflow in-process too
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two test processes on two cores: one compute thread each (inherited by the
    # stage processes they start), or torch's two threads per process thrash. The tiny model is no
    # slower on one thread (a tiny DAG run: 121 s vs 128 s) and gives the same golden metrics.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
THINKPIPE = [sys.executable, "-m", "pipelines.cli"]
TINY_MODEL = "thinkpipe-glm4v-tiny"
TINY_EXPERIMENT = "thinkpipe-tiny"


@dataclass
class PipelineRun:
    name: str
    returncode: int
    output: str
    seconds: float


class TinyPipeline:
    """Runs `thinkpipe run --profile tiny` against one state dir / tracking store."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.tracking_uri = f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}"

    def run(self, name: str, *extra: str, env: dict[str, str] | None = None) -> PipelineRun:
        cmd = [*THINKPIPE, "run", "--profile", "tiny", "--run-name", name, "--state-dir", str(self.state_dir),
               "--tracking-uri", self.tracking_uri, *extra]
        started = time.monotonic()
        # pinned to the CPU: golden metrics are fp32 CPU runs, and a GPU host would train in bf16
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "CUDA_VISIBLE_DEVICES": "",
                                   **(env or {})})
        return PipelineRun(name, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)

    def client(self):
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.MlflowClient(self.tracking_uri)

    def runs_of(self, run_name: str):
        """(parent run, nested stage runs) of the one pipeline run named `run_name`."""
        client = self.client()
        exp = client.get_experiment_by_name(TINY_EXPERIMENT)
        parents = client.search_runs([exp.experiment_id], f"attributes.run_name = '{run_name}' "
                                     f"AND tags.`thinkpipe.stage` = 'pipeline'")
        assert len(parents) == 1, [r.data.tags for r in parents]
        children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
        # every run of a pipeline run carries its unique id
        assert {r.data.tags["thinkpipe.pipeline_run"] for r in children} <= {parents[0].data.tags["thinkpipe.pipeline_run"]}
        return parents[0], children


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyPipeline:
    return TinyPipeline(tmp_path_factory.mktemp("tiny-state"))


@pytest.fixture(scope="session")
def first_run(tiny) -> PipelineRun:
    result = tiny.run("first")
    assert result.returncode == 0 and "registered model" in result.output, result.output[-5000:]
    return result


_SUITE_STARTED: list[float] = []


def pytest_sessionstart(session):
    _SUITE_STARTED.append(time.time())


def pytest_terminal_summary(terminalreporter):
    """The suite's wall time among its last lines; under `make test`, from before the venv and the
    data were made (the figure the 15-minute budget is about)."""
    started = os.environ.get("THINKPIPE_TEST_STARTED")
    tests_s = time.time() - _SUITE_STARTED[0]
    if started:
        total = time.time() - float(started)
        terminalreporter.write_line(f"make test wall time: {total:.0f} s ({total / 60:.1f} min): venv and data "
                                    f"{total - tests_s:.0f} s, tests {tests_s:.0f} s")
    else:
        terminalreporter.write_line(f"test wall time: {tests_s:.0f} s ({tests_s / 60:.1f} min)")
