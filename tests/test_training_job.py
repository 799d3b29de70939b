"""Training stages as distributed training jobs (Kubeflow Trainer v2 TrainJobs by default,
Training Operator v1 PyTorchJobs on request), launched with the real kubernetes client. The job
objects are validated offline (the trainer's API models; Kubernetes' schema for the pods); their
lifecycle runs against a loopback stand-in of the Kubernetes API whose one-node operator runs the
first node's command here, for real: a DeepSpeed pretrain with two torchrun processes, handed
over through a folder like the PVC."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import mlflow
import pytest

from model_src.cluster.training_job import (PATCH_MANAGER, TrainingJobFailed, check_training_job, job_name,
                                            kubernetes_api_client, render_training_job, run_job)
from model_src.cluster.trainjob_schema import train_job_problems
from model_src.config import load_config
from tests.conftest import ROOT
from tests.k8s_api_server import KubernetesApiServer
from tests.loopback import post_json
from tests.test_manifests import _check_pod, _validate

CLUSTER_OVERRIDES = ["cluster.training_job.enabled=true", "cluster.checkpoint_pvc=thinkpipe-checkpoints"]
IMAGE = "registry.example.com/thinkpipe@sha256:" + "a" * 64
SPEC = "/checkpoints/sft/key/job/spec.json"


def render(profile="glm4v-9b", *overrides, nodes=4, per_node=8):
    cluster = load_config(profile, [*CLUSTER_OVERRIDES, *overrides]).cluster
    return render_training_job(cluster, name="thinkpipe-sft-0123456789ab", namespace="thinkpipe", image=IMAGE,
                               stage="sft", spec_path=SPEC, processes_per_node=per_node, nodes=nodes)


def node_pod(job: dict) -> dict:
    """The pod the trainer makes from a TrainJob on torch-distributed: the runtime's `node`
    container with spec.trainer's image, command, env and resources, and the runtime patch."""
    trainer = job["spec"]["trainer"]
    [patch] = job["spec"]["runtimePatches"]
    [rjob] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    template = rjob["template"]["spec"]["template"]
    spec = {k: v for k, v in template["spec"].items() if k != "containers"}
    [container_patch] = template["spec"]["containers"]
    container = {**container_patch, "image": trainer["image"], "command": trainer["command"], "env": trainer["env"],
                 "resources": trainer["resourcesPerNode"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "node-0", "labels": template["metadata"]["labels"]},
            "spec": {**spec, "containers": [container]}}


def test_rendered_trainjob_passes_the_trainer_api_and_gives_admitted_pods(tmp_path):
    job = render()
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert train_job_problems(job) == []  # every field is one Kubeflow Trainer 2.3's models have
    spec = job["spec"]
    assert spec["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                  "name": "torch-distributed"}
    assert spec["trainer"]["numNodes"] == 4 and spec["trainer"]["numProcPerNode"] == 8
    assert spec["trainer"]["command"] == ["torchrun", "-m", "model_src.cluster.job_main", SPEC]
    assert spec["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert spec["activeDeadlineSeconds"] == 168 * 3600  # a default deadline: a hung job ends
    assert spec["runtimePatches"][0]["manager"] == PATCH_MANAGER
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    pod = node_pod(job)
    _validate([pod], tmp_path)  # the pod the trainer would make is a valid, strict Kubernetes Pod
    _check_pod("TrainJob/node", pod["spec"])  # non-root, read-only root, limits, secret references only
    assert pod["metadata"]["labels"]["thinkpipe.io/role"] == "pipeline"  # what the network policies admit
    assert pod["spec"]["serviceAccountName"] == "thinkpipe-trainer"  # no API rights, no token (manifests)
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "thinkpipe-s3", "key": "secret_access_key"}}
    assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://mlflow.thinkpipe.svc")
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["spec"]["volumes"]}
    assert claims["checkpoints"] == "thinkpipe-checkpoints" and claims["cache"] == "thinkpipe-model-cache"
    queued = render("glm4v-9b", "cluster.training_job.queue=gpu-queue")
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    cpu_only = node_pod(render("glm4v-9b", "cluster.training_job.gpus_per_node=0"))
    assert "nvidia.com/gpu" not in cpu_only["spec"]["containers"][0]["resources"]["limits"]
    assert "tolerations" not in cpu_only["spec"]
    assert job_name("sft", "0123456789abcdef") == "thinkpipe-sft-0123456789ab"


def test_the_launcher_refuses_a_trainjob_the_trainer_api_would_not_take():
    job = render()
    job["spec"]["trainer"]["numProcsPerNode"] = 8  # misspelt: the models would silently drop it
    job["spec"]["trainer"]["numNodes"] = "4"       # a string where the API wants an integer
    with pytest.raises(TrainingJobFailed, match=r"unknown field spec\.trainer\.numProcsPerNode; TrainerV1alpha1Trainer\.numNodes: Input should be a valid integer"):
        check_training_job(job)


def test_pytorchjob_kind_keeps_v1_clusters_working(tmp_path):
    job = render("glm4v-9b", "cluster.training_job.kind=PyTorchJob")
    assert job["apiVersion"] == "kubeflow.org/v1" and job["spec"]["nprocPerNode"] == "8"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert {role: r["replicas"] for role, r in replicas.items()} == {"Master": 1, "Worker": 3}
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"sft-{role.lower()}"}, "spec": r["template"]["spec"]}
            for role, r in replicas.items()]
    _validate(pods, tmp_path)
    for pod in pods:
        _check_pod(pod["metadata"]["name"], pod["spec"])
        assert pod["spec"]["automountServiceAccountToken"] is False
    single = render("glm4v-9b", "cluster.training_job.kind=PyTorchJob", nodes=1, per_node=2)
    assert set(single["spec"]["pytorchReplicaSpecs"]) == {"Master"}


@pytest.fixture()
def k8s(tmp_path, monkeypatch):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    with KubernetesApiServer(cwd=ROOT, base_env=env) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield server


def _with_command(job: dict, command: list[str]) -> dict:
    if job["kind"] == "TrainJob":
        job["spec"]["trainer"]["command"] = command
    else:
        job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"] = command
    return job


def _job(kind: str, command: list[str]) -> dict:
    return _with_command(render("tiny", f"cluster.training_job.kind={kind}", nodes=1, per_node=1), command)


FAILING = ["python", "-c", "print('step 1 loss 2.5'); print('CUDA out of memory'); raise SystemExit(3)"]
SUCCEEDING = ["python", "-c", "print('step 1 loss 2.5'); print('done')"]


@pytest.mark.parametrize("kind,path", [("TrainJob", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/thinkpipe/trainjobs"),
                                       ("PyTorchJob", "/apis/kubeflow.org/v1/namespaces/thinkpipe/pytorchjobs")])
def test_failed_job_raises_with_the_log_tail_and_is_deleted(k8s, kind, path):
    lines = []
    with pytest.raises(TrainingJobFailed, match="(?s)node 0 exited 3.*CUDA out of memory"):
        run_job(kubernetes_api_client(), _job(kind, FAILING), poll_seconds=0.1, timeout_s=60, log=lines.append)
    assert "[thinkpipe-sft-0123456789ab] step 1 loss 2.5" in lines  # node 0's log was streamed
    assert k8s.state.deleted == ["thinkpipe-sft-0123456789ab"]
    assert ("POST", path) in k8s.state.requests


def test_a_retry_replaces_a_failed_job_and_attaches_to_a_complete_one(k8s):
    """A KFP retry of the stage finds the job of its earlier attempt by name: a failed one (kept for
    debugging) is replaced, not failed on again; a complete one is attached to, not rerun."""
    with pytest.raises(TrainingJobFailed):
        run_job(kubernetes_api_client(), _job("TrainJob", FAILING), poll_seconds=0.1, timeout_s=60,
                keep_failed=True, log=lambda _: None)
    name = "thinkpipe-sft-0123456789ab"
    assert name in k8s.state.jobs and not k8s.state.deleted  # kept
    lines = []
    run_job(kubernetes_api_client(), _job("TrainJob", SUCCEEDING), poll_seconds=0.1, timeout_s=60, log=lines.append)
    assert any("earlier attempt's job failed; replacing it" in line for line in lines)
    assert f"[{name}] done" in lines and k8s.state.deleted == [name, name]  # replaced, then cleaned up
    runs_before = len(k8s.state.created)
    # an attempt whose job already completed (the pod was lost after the job ended)
    assert _post(k8s, "/apis/trainer.kubeflow.org/v1alpha1/namespaces/thinkpipe/trainjobs",
                 _job("TrainJob", SUCCEEDING))[0] == 201
    k8s.state.pods[f"{name}-node-0-0"].done.wait(60)
    lines.clear()
    run_job(kubernetes_api_client(), _job("TrainJob", FAILING), poll_seconds=0.1, timeout_s=60, log=lines.append)
    assert any("earlier attempt's job is complete; attaching to it" in line for line in lines)
    assert f"[{name}] done" in lines  # the complete job's log, not a new run of the failing command
    assert len(k8s.state.created) == runs_before + 2  # the direct create and the refused (409) one


def test_a_job_past_its_timeout_is_given_up_and_deleted(k8s):
    started = time.monotonic()
    with pytest.raises(TrainingJobFailed, match="still running after 1 s"):
        run_job(kubernetes_api_client(), _job("TrainJob", ["python", "-c", "import time; time.sleep(20)"]),
                poll_seconds=0.1, timeout_s=1, log=lambda _: None)
    assert time.monotonic() - started < 15
    assert k8s.state.deleted == ["thinkpipe-sft-0123456789ab"]


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
    assert created["kind"] == "TrainJob" and created["spec"]["trainer"]["numProcPerNode"] == 2
    assert created["spec"]["trainer"]["numNodes"] == 1
    assert k8s.state.deleted == [created["metadata"]["name"]]  # cleaned up after success
    log = k8s.state.pods[f"{created['metadata']['name']}-node-0-0"].log
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


@pytest.mark.slow  # a two-process DeepSpeed job on CPU, twice: minutes
def test_a_lost_tracking_server_ends_every_rank_of_a_job_and_the_rerun_resumes_its_run(k8s, tmp_path, monkeypatch):
    """The tracking server dies for good mid-job: rank 0 gives up after MLflow's retries and exits,
    torchrun stops rank 1 (waiting in a collective) at once, the stage ends with the cause. Once the
    server is back, the stage's retry resumes the DeepSpeed checkpoint in the same MLflow run."""
    import threading

    import psutil

    from model_src.data.curate import curate
    from model_src.data.generate import GeneratorConfig, generate_corpus
    from model_src.data.schema import SPLITS
    from model_src.stages import init, pretrain
    from model_src.tracking import TrackingLost
    from tests.mlflow_server import MlflowServer

    retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    cfg = load_config("tiny", ["pretrain.num_steps=12", "pretrain.batch_size=4", "pretrain.log_every=1",
                               "pretrain.deepspeed=true", "pretrain.zero_stage=2", "pretrain.checkpoint_every=4",
                               "experiment=lost-test", *CLUSTER_OVERRIDES, f"cluster.checkpoint_mount={tmp_path / 'pvc'}",
                               "cluster.training_job.gpus_per_node=0", "cluster.training_job.processes_per_node=2",
                               "cluster.training_job.poll_seconds=0.2"])
    generate_corpus(tmp_path / "raw", GeneratorConfig(rows={"stem": 24, "digits": 24}))
    curate(tmp_path / "raw", {n: tmp_path / "cur" / n for n in (*SPLITS, "report")}, cfg.curate, validate=False)
    with MlflowServer(tmp_path / "server") as server:
        k8s.state.base_env.update({"MLFLOW_TRACKING_URI": server.url, **retries})  # cluster.env on a cluster
        for name, value in {"MLFLOW_TRACKING_URI": server.url, "THINKPIPE_CHECKPOINT_ROOT": str(tmp_path / "pvc"),
                            "THINKPIPE_PIPELINE_RUN": "lost", **retries}.items():
            monkeypatch.setenv(name, value)  # restored after the test, the stage's give-up setting too
        mlflow.set_tracking_uri(server.url)
        lineage, _ = init.run(config_json=cfg.to_json(), data_dir=str(tmp_path / "raw"), git_commit="c", data_hash="",
                              data_rev="r", image="local-image", pipeline_run_name="lost")

        def kill_at_first_checkpoint() -> None:
            while not list((tmp_path / "pvc").rglob("step-00000004/thinkpipe-checksums.json")):
                time.sleep(0.05)
            server.kill()
            killed_at.append(time.monotonic())

        killed_at: list[float] = []
        watcher = threading.Thread(target=kill_at_first_checkpoint, daemon=True)
        watcher.start()
        args = dict(lineage=lineage, pretrain_data=str(tmp_path / "cur" / "pretrain"), model_out=str(tmp_path / "model"),
                    use_cache=False)
        with pytest.raises(TrackingLost, match=f"stage pretrain: the MLflow tracking server {server.url} stopped "
                                               "answering .* its checkpoints in .* are kept"):
            pretrain.run(**args)
        ended_after = time.monotonic() - killed_at[0]
        assert ended_after < 120, ended_after  # not gloo's 30-minute collective timeout
        [pod] = k8s.state.pods.values()
        assert "job_main: rank 0: the MLflow tracking server stopped answering" in pod.log
        assert not [p for p in psutil.process_iter(["cmdline"]) if "model_src.cluster.job_main" in " ".join(
            p.info["cmdline"] or [])]  # rank 1 did not linger
        [tag] = list((tmp_path / "pvc" / "pretrain").glob("*/deepspeed/step-*"))
        run_id = json.loads((tag / "meta.json").read_text())["run_id"]

        server.start()
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # the give-up setting was this process's
        k8s.state.pods.clear()
        pretrain.run(**args)  # the stage's retry (the same pipeline run)
        log = next(iter(k8s.state.pods.values())).log
        assert "resuming from" in log
        client = mlflow.MlflowClient(server.url)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["thinkpipe.resumed"] == "true"
        steps = {m.step for m in client.get_metric_history(run_id, "loss")}
        assert steps == set(range(12))  # one run holds the whole curve, across the outage


def _post(k8s, path: str, job: dict) -> tuple[int, dict]:
    return post_json(f"{k8s.url}{path}", job)


def test_the_kubernetes_stand_in_rejects_fields_the_real_apis_do_not_have(k8s):
    """The stand-in bites, as a server with strict field validation would: a TrainJob with a field
    the trainer API lacks, or a patch naming a container the runtime lacks, and a PyTorchJob whose
    pod template has a misspelt field, are answered 422 naming them, and nothing is created."""
    trainjobs = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/thinkpipe/trainjobs"
    job = _job("TrainJob", SUCCEEDING)
    job["spec"]["trainer"]["numProcsPerNode"] = 1
    code, status = _post(k8s, trainjobs, job)
    assert code == 422 and status["reason"] == "Invalid" and "spec.trainer.numProcsPerNode" in status["message"]
    job = _job("TrainJob", SUCCEEDING)
    job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"][
        "spec"]["template"]["spec"]["containers"][0]["name"] = "trainer"
    code, status = _post(k8s, trainjobs, job)
    assert code == 422 and "the runtime has no container 'trainer'" in status["message"]
    job = _job("PyTorchJob", SUCCEEDING)
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    code, status = _post(k8s, "/apis/kubeflow.org/v1/namespaces/thinkpipe/pytorchjobs", job)
    assert code == 422 and "Master pod template at spec.containers.0" in status["message"]
    assert "'imagePullPolicyy'" in status["message"]
    assert not k8s.state.created and not k8s.state.jobs


ROLLOUT_IMAGE = "registry.example.com/thinkpipe-rollout@sha256:" + "b" * 64
ROLLOUT_OVERRIDES = ["rlcs.rollout_engine=vllm-server", "cluster.rollout_server.enabled=true",
                     f"cluster.rollout_server.image={ROLLOUT_IMAGE}"]


def test_rlcs_in_a_job_with_vllm_needs_a_rollout_server_by_digest():
    from model_src.config import ConfigError

    with pytest.raises(ConfigError, match="cluster.rollout_server.enabled.*training image has no vLLM"):
        load_config("glm4v-9b", ["rlcs.rollout_engine=vllm-server"])
    with pytest.raises(ConfigError, match="cluster.rollout_server.image.*by digest"):
        load_config("glm4v-9b", [*ROLLOUT_OVERRIDES[:2], "cluster.rollout_server.image=vllm/vllm-openai:latest"])
    from model_src.cluster.training_job import needs_rollout_server

    cfg = load_config("glm4v-9b", ROLLOUT_OVERRIDES)
    assert needs_rollout_server(cfg, "rlcs") and not needs_rollout_server(cfg, "sft")
    assert not needs_rollout_server(load_config("glm4v-9b", [*ROLLOUT_OVERRIDES, "rlcs.rollout_server_url=http://x:1"]),
                                    "rlcs")


def test_the_rollout_server_pod_beside_an_rlcs_job_starts_serves_its_url_and_goes(k8s, tmp_path):
    """RLCS's job shares one vLLM pod: the launcher creates it (a Pod Kubernetes' schema takes, in
    the namespace's rules, asking for the token the job's processes send) and its Service, waits
    until it is ready, hands the URL and the weights folder to every process, and deletes both;
    a server that cannot start fails the stage with its log and leaves nothing behind."""
    from model_src.cluster.rollout_server import (RolloutServerFailed, render_rollout_server, start_rollout_server,
                                                  stop_rollout_server)

    cluster = load_config("glm4v-9b", [*CLUSTER_OVERRIDES, *ROLLOUT_OVERRIDES]).cluster
    pod, service = render_rollout_server(cluster, name="thinkpipe-rlcs-0123456789ab-rollout", namespace="thinkpipe",
                                         stage="rlcs", model="/checkpoints/rlcs/key/job/inputs/sft_model", seed=3)
    _validate([pod, service], tmp_path)
    _check_pod("rollout-server", pod["spec"])
    assert pod["metadata"]["labels"]["thinkpipe.io/role"] == "pipeline"  # the job's peers may reach it
    [container] = pod["spec"]["containers"]
    assert container["image"] == ROLLOUT_IMAGE and container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["command"][:3] == ["python3", "-m", "model_src.serving.rollout_server"]
    assert "/checkpoints/rlcs/key/job/inputs/sft_model" in container["command"]
    env = {e["name"]: e for e in container["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "thinkpipe-vllm", "key": "api_key"}

    from model_src.cluster.training_job import kubernetes_api_client

    api = kubernetes_api_client()
    url = start_rollout_server(api, pod, service, timeout_s=30, poll_seconds=0.1, log=lambda _: None)
    assert url == "http://thinkpipe-rlcs-0123456789ab-rollout.thinkpipe.svc:8100"
    assert [(v, k) for v, k, _ in k8s.state.object_log] == [("create", "Pod"), ("create", "Service")]
    job = render_training_job(cluster, name="thinkpipe-rlcs-0123456789ab", namespace="thinkpipe", image=IMAGE,
                              stage="rlcs", spec_path=SPEC, processes_per_node=8, nodes=4,
                              extra_env={"THINKPIPE_ROLLOUT_SERVER_URL": url,
                                         "THINKPIPE_ROLLOUT_WEIGHTS_DIR": "/checkpoints/rlcs/key/job/rollout-weights"})
    assert train_job_problems(job) == []
    trainer_env = {e["name"]: e.get("value") for e in job["spec"]["trainer"]["env"]}
    assert trainer_env["THINKPIPE_ROLLOUT_SERVER_URL"] == url
    stop_rollout_server(api, pod["metadata"]["name"], "thinkpipe", log=lambda _: None)
    assert not k8s.state.objects

    k8s.state.pods_become_ready = False
    with pytest.raises(RolloutServerFailed, match="(?s)its pod failed.*CUDA error: no device"):
        start_rollout_server(api, pod, service, timeout_s=30, poll_seconds=0.1, log=lambda _: None)
    assert not k8s.state.objects  # cleaned up
