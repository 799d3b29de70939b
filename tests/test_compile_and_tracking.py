"""The committed IR is current; an unreachable tracking server fails fast, naming the URI; stages
log to a real MLflow server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from model_src.config import load_config
from pipelines.compile import PIPELINES, compile_pipeline
from tests.conftest import ROOT, THINKPIPE
from tests.mlflow_server import MlflowServer
from model_src.train.distributed import free_port


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_committed_compiled_pipelines_are_up_to_date(tmp_path, pipeline):
    fresh = compile_pipeline(tmp_path / f"{pipeline}.yaml", pipeline=pipeline).read_text()
    committed = (ROOT / "pipelines" / "compiled" / f"{pipeline}.yaml").read_text()
    assert fresh == committed, f"pipelines/compiled/{pipeline}.yaml is stale: run `make compile` and commit it"


def test_training_dag_shape():
    ir = next(yaml.safe_load_all((ROOT / "pipelines" / "compiled" / "training.yaml").read_text()))
    root = ir["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "finish"}  # the stages, then the exit handler whatever happened
    assert root["finish"]["dependentTasks"] == ["exit-handler-1"]
    tasks = ir["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    # curate fans out first: curate-plan, then a ParallelFor loop of curate-scan, collected by curate
    assert set(tasks) == {"init", "curate-plan", "for-loop-2", "curate", "pretrain", "sft", "rlcs", "evaluate", "export"}
    assert set(tasks["export"]["dependentTasks"]) == {"evaluate", "init", "rlcs"}
    assert tasks["curate-plan"]["dependentTasks"] == ["init"]  # fed the lineage value by init
    assert set(tasks["curate"]["dependentTasks"]) == {"init", "for-loop-2"}


def test_retraining_dag_runs_training_only_when_the_check_says_so():
    ir = next(yaml.safe_load_all((ROOT / "pipelines" / "compiled" / "retraining.yaml").read_text()))
    outer = ir["root"]["dag"]["tasks"]
    assert set(outer) == {"exit-handler-1", "notify-failure"}  # whatever fails, the exit handler posts it
    assert outer["notify-failure"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    tasks = ir["components"][outer["exit-handler-1"]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(tasks) == {"check-data", "condition-2"}
    condition = tasks["condition-2"]
    assert condition["dependentTasks"] == ["check-data"]
    assert condition["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--check-data-retrain'] == true"
    inner = ir["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    training = ir["components"][inner["thinkpipe-training"]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(training) == {"exit-handler-1", "finish"}
    stages = ir["components"][training["exit-handler-1"]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(stages) == {"init", "curate-plan", "for-loop-2", "curate", "pretrain", "sft", "rlcs", "evaluate", "export"}


def test_unreachable_tracking_server_fails_fast_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = subprocess.run([*THINKPIPE, "run", "--profile", "tiny", "--tracking-uri", uri,
                           "--state-dir", str(tmp_path / "state")], cwd=ROOT, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2
    assert uri in proc.stderr
    assert elapsed < 30
    assert not (tmp_path / "state" / "kfp").exists()  # no stage started


@pytest.fixture()
def mlflow_server(tmp_path):
    with MlflowServer(tmp_path) as server:
        yield server.url


def test_init_and_curate_stages_log_to_a_real_mlflow_server(mlflow_server, tmp_path, monkeypatch):
    import mlflow

    from model_src.lineage import dvc_pin
    from model_src.stages import curate, init
    from model_src.tracking import check_tracking_uri

    check_tracking_uri(mlflow_server, timeout_s=5)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("THINKPIPE_PIPELINE_RUN", "srv-1")
    mlflow.set_tracking_uri(mlflow_server)
    cfg = load_config("tiny", ["experiment=server-test"])
    data_hash, data_rev = dvc_pin(ROOT)
    lineage, scope = init.run(config_json=cfg.to_json(), data_dir=str(ROOT / "data" / "raw"), git_commit="abc",
                              data_hash=data_hash, data_rev=data_rev, image="test-image", pipeline_run_name="srv")
    outputs = {n: str(tmp_path / n) for n in ("pretrain", "sft", "rl", "eval", "report")}
    metrics = curate.run(lineage=lineage.to_json(), data_dir=str(ROOT / "data" / "raw"), outputs=outputs)
    assert metrics["input_rows"] == metrics["kept_rows"] + metrics["quarantined_rows"] > 0
    client = mlflow.MlflowClient(mlflow_server)
    runs = client.search_runs([scope.experiment_id], f"tags.mlflow.parentRunId = '{scope.parent_run_id}'")
    assert sorted(r.info.run_name for r in runs) == ["curate", "init"]
    curate_run = next(r for r in runs if r.info.run_name == "curate")
    assert curate_run.data.tags["thinkpipe.data_hash"] == data_hash
    artifacts = {a.path for a in client.list_artifacts(curate_run.info.run_id, "outputs")}
    assert "outputs/eval" in artifacts  # outputs are stored on the server, so a later run can reuse them
    # the reviewer's view: which data fed the run, the mix plots and the Data Docs
    (dataset_input,) = curate_run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == data_hash.removesuffix(".dir")
    assert {t.key: t.value for t in dataset_input.tags}["dvc.hash"] == data_hash
    assert {a.path for a in client.list_artifacts(curate_run.info.run_id, "plots")} == \
        {"plots/domain_mix.png", "plots/lengths_difficulty.png"}
    docs = {a.path for a in client.list_artifacts(curate_run.info.run_id, "outputs/report/data_docs")}
    assert "outputs/report/data_docs/index.html" in docs


def test_tracking_check_masks_credentials_names_a_refused_login_and_bounds_dns(monkeypatch):
    """A password in the URI never reaches a message; HTTP 401 is a refused login, not an outage;
    a name that does not resolve fails within the DNS limit instead of hanging."""
    import json
    import socket
    from http.server import BaseHTTPRequestHandler

    from model_src import tracking
    from model_src.tracking import TrackingUnavailable, check_tracking_uri
    from tests.loopback import LoopbackServer

    with pytest.raises(TrackingUnavailable) as closed:
        check_tracking_uri(f"http://pipeline:s3cret-pw@127.0.0.1:{free_port()}", timeout_s=1)
    assert "pipeline:***@127.0.0.1" in str(closed.value) and "s3cret-pw" not in str(closed.value)

    class BasicAuth(BaseHTTPRequestHandler):  # MLflow's basic-auth app: /health open, the API not
        def do_GET(self):  # noqa: N802
            status, body = (200, b"OK") if self.path == "/health" else (401, json.dumps(
                {"error_code": "UNAUTHENTICATED", "message": "You are not authenticated."}).encode())
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with LoopbackServer(BasicAuth) as server:
        started = time.monotonic()
        with pytest.raises(TrackingUnavailable, match="refused the login .*MLFLOW_TRACKING_USERNAME"):
            check_tracking_uri(server.url.replace("http://", "http://pipeline:wrong@"), timeout_s=10)
        assert time.monotonic() - started < 8  # told at once, not after polling to the deadline

    monkeypatch.setattr(tracking, "DNS_TIMEOUT_S", 0.5)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(30))  # a resolver that hangs
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="does not resolve"):
        check_tracking_uri("http://mlflow.internal.example:5000", timeout_s=10)
    assert time.monotonic() - started < 3


def test_two_runs_creating_the_experiment_at_once_share_it_and_quotes_in_run_names_are_refused(tmp_path, monkeypatch):
    import mlflow

    from model_src.tracking import ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    other = mlflow.MlflowClient(uri).create_experiment("thinkpipe-race")  # the other run got there first ...
    original = mlflow.MlflowClient.get_experiment_by_name
    calls = []

    def looked_up_before_it_existed(self, name):  # ... after this run had looked and found nothing
        calls.append(name)
        return None if len(calls) == 1 else original(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", looked_up_before_it_existed)
    assert ensure_experiment("thinkpipe-race", tracking_uri=uri) == other and len(calls) == 2

    proc = subprocess.run([*THINKPIPE, "run", "--profile", "tiny", "--run-name", "it's mine",
                           "--state-dir", str(tmp_path / "state"), "--tracking-uri", f"sqlite:///{tmp_path / 's.db'}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "character \"'\" is not allowed" in proc.stderr, proc.stderr
    assert not (tmp_path / "state" / "kfp").exists()  # refused before any stage


def test_runs_opening_a_fresh_sqlite_store_at_once_create_it_once(tmp_path):
    """MLflow creates and migrates a new SQLite store on first open; four processes starting
    together (as `thinkpipe run`s do, through their tracking check) all get a usable store."""
    code = ("import sys; from model_src.tracking import check_tracking_uri, ensure_experiment; "
            "check_tracking_uri(sys.argv[1]); print(ensure_experiment('race', tracking_uri=sys.argv[1]))")
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
             for _ in range(4)]
    results = [(p.wait(timeout=120), p.stdout.read().strip(), p.stderr.read()[-2000:]) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err for code, _, err in results if code]
    assert len({out.splitlines()[-1] for _, out, _ in results}) == 1  # one experiment for all
