"""A pipeline killed between two stages leaves its parent run RUNNING with no stage run to find it
by; the next pipeline run on the same store checks the parent's owner (the `thinkpipe run` process:
host, boot id, pid and start time) and marks it KILLED, saying who found it. A live owner's run,
and one whose owner this machine cannot judge, are left alone. Real init stages, a real MLflow store,
real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import mlflow
import pytest

from model_src.config import load_config
from model_src.lineage_report import render_lineage
from model_src.names import LAUNCHER_PID_ENV, OWNER_TAG, PIPELINE_RUN_ENV, TAKEN_OVER_BY_TAG
from model_src.stages import init
from model_src.stages.liveness import alive, owner


def start_pipeline(monkeypatch, data_dir, name: str, launcher_pid: int) -> str:
    """What `thinkpipe run` does before its DAG: the run's identity and its launcher, then init."""
    monkeypatch.setenv(PIPELINE_RUN_ENV, f"{name}-id")
    monkeypatch.setenv(LAUNCHER_PID_ENV, str(launcher_pid))
    _, scope = init.run(config_json=load_config("tiny").to_json(), data_dir=str(data_dir), git_commit="c" * 40,
                        data_hash="", data_rev="r", image="img", pipeline_run_name=name)
    return scope.parent_run_id


def test_the_next_run_marks_a_parent_whose_pipeline_died_between_stages_killed(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    data = tmp_path / "raw"
    data.mkdir()
    (data / "rows.txt").write_text("digit,7\n")

    launcher = subprocess.Popen(["sleep", "600"])  # stands for the `thinkpipe run` process of the first pipeline
    try:
        first = start_pipeline(monkeypatch, data, "first", launcher.pid)
        tag = client.get_run(first).data.tags[OWNER_TAG]
        assert json.loads(tag)["pid"] == launcher.pid and alive(tag) is True
        second = start_pipeline(monkeypatch, data, "second", os.getpid())  # the first still lives: untouched
        assert client.get_run(first).info.status == "RUNNING"
    finally:
        launcher.kill()  # SIGKILL between two stages: no stage run is left RUNNING, only the parent
        launcher.wait()
    assert alive(tag) is False
    elsewhere = json.dumps({**json.loads(tag), "host": socket.gethostname() + "-other"})
    assert alive(elsewhere) is None and alive("") is None  # not ours to judge

    third = start_pipeline(monkeypatch, data, "third", os.getpid())
    dead = client.get_run(first)
    assert dead.info.status == "KILLED"
    assert dead.data.tags[TAKEN_OVER_BY_TAG] == third
    assert dead.data.tags[f"{TAKEN_OVER_BY_TAG}.pipeline_run"] == "third-id"
    assert client.get_run(second).info.status == "RUNNING"  # its owner (this process) is alive
    report = {"model": "m", "version": "1", "aliases": [], "promotion": "", "lineage": {}, "eval_table": [],
              "stages": [], "pipeline_run": {"run_id": first, "name": "first", "status": dead.info.status,
                                             "taken_over_by": dead.data.tags[TAKEN_OVER_BY_TAG]}}
    assert f"KILLED (its pipeline died; run {third} found it and closed it)" in render_lineage(report)


def test_an_owner_is_its_process_not_its_pid():
    """A pid reused by another process, or a reboot, never reads as the same owner."""
    tag = json.loads(owner(os.getpid()))
    assert alive(json.dumps(tag)) is True
    assert alive(json.dumps({**tag, "start": str(int(tag["start"]) + 1)})) is False  # another process, same pid
    assert alive(json.dumps({**tag, "boot_id": "another-boot"})) is False


def test_on_a_cluster_the_owner_is_the_argo_workflow_and_its_phase_decides(tmp_path, monkeypatch):
    """A cluster pod names its workflow (the pod's namespace and workflow label); the next run asks
    the Kubernetes API (a loopback stand-in here) for its phase: a Failed or vanished workflow's
    parent is closed, a Running one's is not, and an API that cannot answer decides nothing."""
    from kubernetes import client

    from model_src.names import NAMESPACE_ENV
    from model_src.stages.liveness import close_dead_pipelines
    from tests.k8s_api_server import KubernetesApiServer

    monkeypatch.delenv(LAUNCHER_PID_ENV, raising=False)
    monkeypatch.setenv(NAMESPACE_ENV, "thinkpipe")
    monkeypatch.setenv(PIPELINE_RUN_ENV, "training-abcde")
    assert json.loads(owner()) == {"namespace": "thinkpipe", "workflow": "training-abcde"}

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = mlflow.MlflowClient(uri)
    experiment = store.create_experiment("e")
    parents = {}
    for workflow in ("failed-wf", "running-wf", "gone-wf"):
        run = store.create_run(experiment, tags={"thinkpipe.stage": "pipeline", "thinkpipe.pipeline_run": workflow,
                                                 OWNER_TAG: json.dumps({"namespace": "thinkpipe", "workflow": workflow})})
        parents[workflow] = run.info.run_id
    with KubernetesApiServer(tmp_path, {}) as server:
        for workflow, phase in (("failed-wf", "Failed"), ("running-wf", "Running")):
            server.state.objects[("Workflow", workflow)] = {
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": workflow, "namespace": "thinkpipe"}, "status": {"phase": phase}}
        configuration = client.Configuration()
        configuration.host = server.url
        api = client.CustomObjectsApi(client.ApiClient(configuration))
        closed = close_dead_pipelines(store, experiment, "new-parent", "training-fghij", api=api)
    assert sorted(closed) == sorted([parents["failed-wf"], parents["gone-wf"]])
    assert store.get_run(parents["running-wf"]).info.status == "RUNNING"
    assert store.get_run(parents["failed-wf"]).data.tags[TAKEN_OVER_BY_TAG] == "new-parent"
    unreachable = client.Configuration()
    unreachable.host = "http://127.0.0.1:9"  # nothing listens: no verdict, nothing closed
    assert alive(json.dumps({"namespace": "thinkpipe", "workflow": "running-wf"}),
                 client.CustomObjectsApi(client.ApiClient(unreachable))) is None


@pytest.mark.slow
def test_a_tiny_dag_killed_in_its_scan_tasks_is_marked_killed_by_the_next_run(tmp_path):
    """The whole `thinkpipe run` process group SIGKILLed after init, while the curate scans run (no
    stage run is open yet); the next run on the store marks the dead parent KILLED."""
    import signal
    import time

    from tests.conftest import ROOT, THINKPIPE, TinyPipeline

    pipeline = TinyPipeline(tmp_path / "state")
    cmd = [*THINKPIPE, "run", "--profile", "tiny", "--run-name", "doomed", "--state-dir", str(pipeline.state_dir),
           "--tracking-uri", pipeline.tracking_uri]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, start_new_session=True)
    seen = ""
    deadline = time.monotonic() + 300
    while "curate-scan" not in seen and time.monotonic() < deadline:  # kfp.local names each task it starts
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "curate-scan" in seen, seen[-3000:]
    client = pipeline.client()
    [doomed] = client.search_runs([client.get_experiment_by_name("thinkpipe-tiny").experiment_id],
                                  "attributes.run_name = 'doomed' AND tags.`thinkpipe.stage` = 'pipeline'")
    assert doomed.info.status == "RUNNING"
    assert sorted(r.data.tags["thinkpipe.stage"] for r in client.search_runs(
        [doomed.info.experiment_id], f"tags.mlflow.parentRunId = '{doomed.info.run_id}'")) == ["init"]
    after = pipeline.run("after")
    assert after.returncode == 0, after.output[-3000:]
    closed = client.get_run(doomed.info.run_id)
    assert closed.info.status == "KILLED" and "marked pipeline run doomed-" in after.output
    assert closed.data.tags[f"{TAKEN_OVER_BY_TAG}.pipeline_run"].startswith("after-")
