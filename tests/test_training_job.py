"""Training stages as Kubeflow Training Operator PyTorchJobs, launched with the real kubernetes
client. The job object is validated offline; its lifecycle runs against a loopback stand-in of the
Kubernetes API whose one-node "operator" runs the Master replica's command here, for real: a
DeepSpeed pretrain with two torchrun processes, handed over through a folder like the PVC."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mlflow
import pytest

from model_src.cluster.training_job import TrainingJobFailed, job_name, render_training_job, run_job
from model_src.config import load_config
from tests.conftest import ROOT
from tests.k8s_api_server import KubernetesApiServer
from tests.test_manifests import _check_pod, _validate

CLUSTER_OVERRIDES = ["cluster.training_job.enabled=true", "cluster.checkpoint_pvc=thinkpipe-checkpoints"]


def render(profile="glm4v-9b", *overrides, nodes=4, per_node=8):
    cluster = load_config(profile, [*CLUSTER_OVERRIDES, *overrides]).cluster
    return render_training_job(cluster, name="thinkpipe-sft-0123456789ab", namespace="thinkpipe",
                               image="registry.example.com/thinkpipe@sha256:" + "a" * 64, stage="sft",
                               spec_path="/checkpoints/sft/key/job/spec.json", processes_per_node=per_node, nodes=nodes)


def test_rendered_job_has_the_profiles_replicas_gpus_and_secret_references(tmp_path):
    job = render()
    assert job["spec"]["nprocPerNode"] == "8" and job["metadata"]["labels"]["thinkpipe.io/stage"] == "sft"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert {role: r["replicas"] for role, r in replicas.items()} == {"Master": 1, "Worker": 3}
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"sft-{role.lower()}"}, "spec": r["template"]["spec"]}
            for role, r in replicas.items()]
    _validate(pods, tmp_path)  # every field of the pod template is a real Kubernetes field
    for pod in pods:
        _check_pod(pod["metadata"]["name"], pod["spec"])  # non-root, read-only root, limits, secret refs only
        [container] = pod["spec"]["containers"]
        assert container["command"] == ["torchrun", "-m", "model_src.cluster.job_main", "/checkpoints/sft/key/job/spec.json"]
        assert container["image"].endswith("@sha256:" + "a" * 64)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        env = {e["name"]: e for e in container["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "thinkpipe-s3", "key": "secret_access_key"}}
        assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://mlflow.thinkpipe.svc")
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["spec"]["volumes"]}
        assert claims["checkpoints"] == "thinkpipe-checkpoints" and claims["cache"] == "thinkpipe-model-cache"
    single = render(nodes=1, per_node=2)["spec"]["pytorchReplicaSpecs"]
    assert set(single) == {"Master"}
    cpu_only = render("glm4v-9b", "cluster.training_job.gpus_per_node=0")["spec"]["pytorchReplicaSpecs"]["Master"]
    assert "nvidia.com/gpu" not in cpu_only["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "tolerations" not in cpu_only["template"]["spec"]
    assert job_name("sft", "0123456789abcdef") == "thinkpipe-sft-0123456789ab"


@pytest.fixture()
def k8s(tmp_path, monkeypatch):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    with KubernetesApiServer(cwd=ROOT, base_env=env) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield server


def test_failed_job_raises_with_the_log_tail_and_is_deleted(k8s):
    from model_src.cluster.training_job import kubernetes_api_client

    job = render("tiny", nodes=1, per_node=1)
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"] = [
        "python", "-c", "print('step 1 loss 2.5'); print('CUDA out of memory'); raise SystemExit(3)"]
    lines = []
    with pytest.raises(TrainingJobFailed, match="(?s)1 Master replica.*CUDA out of memory"):
        run_job(kubernetes_api_client(), job, poll_seconds=0.1, log=lines.append)
    assert "[thinkpipe-sft-0123456789ab] step 1 loss 2.5" in lines  # the master's log was streamed
    assert k8s.state.deleted == ["thinkpipe-sft-0123456789ab"]
    assert ("POST", "/apis/kubeflow.org/v1/namespaces/thinkpipe/pytorchjobs") in k8s.state.requests


@pytest.mark.slow  # two DeepSpeed trainings on CPU, minutes
def test_pretrain_stage_runs_as_a_two_process_deepspeed_job(k8s, tmp_path):
    from model_src.data.curate import curate
    from model_src.data.generate import GeneratorConfig, generate_corpus
    from model_src.data.schema import SPLITS
    from model_src.stages import init, pretrain

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    k8s.state.base_env["MLFLOW_TRACKING_URI"] = tracking  # what cluster.env gives the job's pods
    base = ["pretrain.num_steps=6", "pretrain.batch_size=4", "pretrain.log_every=1", "pretrain.deepspeed=true",
            "pretrain.zero_stage=2", "pretrain.checkpoint_every=0", "experiment=job-test"]
    local_cfg = load_config("tiny", base)
    job_cfg = load_config("tiny", [*base, *CLUSTER_OVERRIDES, f"cluster.checkpoint_mount={tmp_path / 'pvc'}",
                                   "cluster.training_job.gpus_per_node=0", "cluster.training_job.processes_per_node=2",
                                   "cluster.training_job.poll_seconds=0.2"])
    generate_corpus(tmp_path / "raw", GeneratorConfig(rows={"stem": 24, "digits": 24}))
    curate(tmp_path / "raw", {n: tmp_path / "cur" / n for n in (*SPLITS, "report")}, local_cfg.curate, validate=False)
    mlflow.set_tracking_uri(tracking)
    mlflow.MlflowClient(tracking).create_experiment("job-test", artifact_location=(tmp_path / "art").as_uri())
    os.environ["MLFLOW_TRACKING_URI"] = tracking
    os.environ["THINKPIPE_CHECKPOINT_ROOT"] = str(tmp_path / "pvc")
    try:
        results = {}
        for label, cfg in (("local", local_cfg), ("job", job_cfg)):
            os.environ["THINKPIPE_PIPELINE_RUN"] = label
            lineage, _ = init.run(config_json=cfg.to_json(), data_dir=str(tmp_path / "raw"), git_commit=label,
                                  data_hash="", data_rev="r", image="local-image", pipeline_run_name=label)
            results[label] = pretrain.run(lineage=lineage, pretrain_data=str(tmp_path / "cur" / "pretrain"),
                                          model_out=str(tmp_path / f"{label}-model"), use_cache=False)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
        os.environ.pop("THINKPIPE_CHECKPOINT_ROOT")
        os.environ.pop("THINKPIPE_PIPELINE_RUN", None)

    [created] = k8s.state.created
    assert created["spec"]["nprocPerNode"] == "2" and set(created["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    assert k8s.state.deleted == [created["metadata"]["name"]]  # cleaned up after success
    log = k8s.state.pods[f"{created['metadata']['name']}-master-0"].log
    assert "job_main: rank 0/2 runs stage pretrain" in log and "job_main: rank 1/2 runs stage pretrain" in log
    # two DeepSpeed processes give the one-process result (same global batch)
    assert results["job"]["final_loss"] == pytest.approx(results["local"]["final_loss"], rel=1e-3)
    assert results["job"]["num_examples"] == results["local"]["num_examples"]
    client = mlflow.MlflowClient(tracking)
    exp = client.get_experiment_by_name("job-test")
    [run] = client.search_runs([exp.experiment_id], "tags.`thinkpipe.stage` = 'pretrain' AND tags.`thinkpipe.git_commit` = 'job'")
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(6))  # logged once, by rank 0
    config = json.loads((tmp_path / "job-model" / "config.json").read_text())
    assert config["architectures"] == ["Glm4vForConditionalGeneration"]
    assert not (tmp_path / "pvc" / "pretrain").exists() or not list((tmp_path / "pvc" / "pretrain").rglob("spec.json"))


def test_the_kubernetes_stand_in_rejects_a_pod_field_kubernetes_does_not_have(k8s):
    """The stand-in bites: a job whose pod template has a misspelt field is answered 422 naming it
    (Kubernetes' schema, strict), and nothing is created; the launcher's real jobs pass (above)."""
    import urllib.error
    import urllib.request

    job = render("tiny", nodes=1, per_node=1)
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    request = urllib.request.Request(f"{k8s.url}/apis/kubeflow.org/v1/namespaces/thinkpipe/pytorchjobs",
                                     data=json.dumps(job).encode(), headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    status = json.loads(refused.value.read())
    assert refused.value.code == 422 and status["reason"] == "Invalid"
    assert "Master pod template at spec.containers.0" in status["message"] and "'imagePullPolicyy'" in status["message"]
    assert not k8s.state.created and not k8s.state.jobs
