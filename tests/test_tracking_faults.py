"""Faults of the tracking server mid-stage, injected between the stage and a real `mlflow server`
(tests/fault_proxy.py: 503 answers, connections closed unanswered): a short outage is waited out
by MLflow's own retries and loses no metric; a lasting one ends the stage within its retry
budget, saying so and keeping the checkpoints. The rerun that resumes the same MLflow run
once the server is back, and every rank of a multi-process job ending with rank 0, are the slow
test in tests/test_training_job.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_src.config import load_config
from model_src.data.curate import curate
from model_src.data.generate import GeneratorConfig, generate_corpus
from model_src.data.schema import SPLITS
from tests.conftest import ROOT
from tests.fault_proxy import FaultProxy
from tests.mlflow_server import MlflowServer

STEPS = 30
OVERRIDES = [f"pretrain.num_steps={STEPS}", "pretrain.checkpoint_every=10", "experiment=outage"]


def _wait_for(path_glob: str, root: Path, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not list(root.rglob(path_glob)):
        assert proc.poll() is None, f"the stage ended before {path_glob} appeared: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {path_glob} under {root} after {timeout_s} s"
        time.sleep(0.05)


def _loss_history(client, run_id: str) -> dict[int, float]:
    """Step -> training loss, checking that a step logged twice (before a failure and again after the
    resume from an older checkpoint, or by a checkpoint's LoggedModel) has the same value each time."""
    history: dict[int, float] = {}
    for m in client.get_metric_history(run_id, "loss"):
        assert history.setdefault(m.step, m.value) == pytest.approx(m.value, rel=1e-6), m.step
    return history


@pytest.mark.slow  # a rare path (48 s on 2 cores): `make test-slow`; the fault classifier below stays in the default run
def test_a_tracking_outage_is_waited_out_and_a_lasting_one_ends_the_stage_keeping_its_checkpoints(tmp_path):
    import mlflow

    from model_src.stages import init
    from model_src.train.checkpoint import load_meta

    cfg = load_config("tiny", OVERRIDES)
    generate_corpus(tmp_path / "raw", GeneratorConfig(rows={"stem": 32, "digits": 32}))
    curate(tmp_path / "raw", {n: tmp_path / "cur" / n for n in (*SPLITS, "report")}, cfg.curate, validate=False)
    with MlflowServer(tmp_path / "server") as server, FaultProxy(server.url) as proxy:
        base_env = {**os.environ, "MLFLOW_TRACKING_URI": proxy.url, "MLFLOW_DISABLE_TELEMETRY": "true",
                    "THINKPIPE_CHECKPOINT_ROOT": str(tmp_path / "ckpt"), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
        os.environ["MLFLOW_TRACKING_URI"] = proxy.url
        mlflow.set_tracking_uri(proxy.url)
        try:
            lineages = {}
            for pipeline_run, seed in (("waits", 1), ("gives-up", 2)):  # other seed: other content key
                lineage, _ = init.run(config_json=load_config("tiny", [*OVERRIDES, f"seed={seed}"]).to_json(),
                                      data_dir=str(tmp_path / "raw"), git_commit="c", data_hash="", data_rev="r",
                                      image="i", pipeline_run_name=pipeline_run)
                lineages[pipeline_run] = tmp_path / f"{pipeline_run}.json"
                lineages[pipeline_run].write_text(lineage.to_json())
        finally:
            os.environ.pop("MLFLOW_TRACKING_URI")

        def start(pipeline_run: str, retries: int) -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "stage_driver.py"), str(lineages[pipeline_run]),
                 str(tmp_path / "cur" / "pretrain"), str(tmp_path / f"model-{pipeline_run}")],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**base_env, "THINKPIPE_PIPELINE_RUN": pipeline_run, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries)})

        # 1. mid-training the server answers two requests 503 and two not at all (a restart): MLflow's
        # retries (here up to 0+2+4+8+16+32 s) wait it out; the stage finishes with every step's loss
        stage = start("waits", retries=6)
        _wait_for("step-00000010", tmp_path / "ckpt", stage)
        outage = [proxy.inject("*", "", "503", times=2), proxy.inject("*", "", "drop", times=2)]
        output = stage.communicate(timeout=300)[0]
        assert stage.returncode == 0, output[-3000:]
        client = mlflow.MlflowClient(server.url)  # straight to the server
        [waited] = client.search_runs([client.get_experiment_by_name("outage").experiment_id],
                                      "tags.`thinkpipe.stage` = 'pretrain' AND tags.`thinkpipe.pipeline_run` = 'waits'")
        assert [fault.injected for fault in outage] == [2, 2] and waited.info.status == "FINISHED"
        assert set(_loss_history(client, waited.info.run_id)) == set(range(STEPS))

        # 2. the server is gone for good: once its retries (0+2 s) are spent the stage ends at once,
        # naming the server and what it kept; the rank does not wait out the budget again to end its run
        stage = start("gives-up", retries=2)
        _wait_for("step-00000020", tmp_path / "ckpt", stage)
        proxy.inject("*", "", "drop", times=10**6)
        gone_at = time.monotonic()
        output = stage.communicate(timeout=300)[0]
        gave_up_after = time.monotonic() - gone_at
        assert stage.returncode != 0
        assert f"TrackingLost: stage pretrain: the MLflow tracking server {proxy.url} stopped answering " \
               "(2 retries, backoff factor 1, 5 s per request spent); its checkpoints in" in output, output[-3000:]
        assert gave_up_after < 45, gave_up_after
        [checkpoint] = sorted((tmp_path / "ckpt" / "pretrain").rglob("step-*"))[-1:]
        assert load_meta(checkpoint)["step"] >= 20  # kept for the rerun
        assert load_meta(checkpoint)["run_id"]  # the run a rerun continues


def test_only_mlflow_giving_up_on_its_server_counts_as_the_tracking_server_lost():
    """The stage says "tracking server lost" for MLflow's own spent retries (however deep in the
    chain), not for another service's connection error (a judge, a rollout server), nor for a
    request MLflow refused."""
    import requests
    from mlflow.exceptions import MlflowException

    from model_src.tracking import tracking_gave_up

    def raised(make) -> BaseException:
        try:
            make()
        except Exception as exc:  # noqa: BLE001 - the exception is the value under test
            return exc
        raise AssertionError("nothing raised")

    def mlflow_lost():
        try:
            raise requests.exceptions.ConnectionError("connection refused")
        except requests.exceptions.ConnectionError as exc:
            raise MlflowException(f"API request to http://127.0.0.1:1/api failed with exception {exc}")  # noqa: B904

    def stage_failed():
        try:
            mlflow_lost()
        except MlflowException as exc:
            raise RuntimeError("pretrain failed") from exc

    def judge_down():
        raise requests.exceptions.ConnectionError("judge at 127.0.0.1:9 refused")

    def refused():
        raise MlflowException("Run 'x' not found", error_code="RESOURCE_DOES_NOT_EXIST")

    assert tracking_gave_up(raised(mlflow_lost)) and tracking_gave_up(raised(stage_failed))
    assert not tracking_gave_up(raised(judge_down)) and not tracking_gave_up(raised(refused))
