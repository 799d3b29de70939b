"""The cluster DAG as KFP would receive it: compiled IR, validated against KFP's own protobuf
schemas, carrying each stage's Kubernetes settings from the profile (kfp-kubernetes)."""

from __future__ import annotations

import pytest
import yaml
from google.protobuf import json_format
from kfp import compiler
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from model_src.cluster.training_job import render_training_job
from model_src.config import ConfigError, load_config
from model_src.stages.registry import STAGE_OF_TASK, STAGES, TASK_NAMES
from pipelines.training import build_training_pipeline


def compile_ir(tmp_path, profile: str, *overrides: str) -> tuple[dict, dict]:
    """(pipeline spec, kubernetes platform spec per executor), both strictly parsed by KFP's protos."""
    out = tmp_path / f"{profile}.yaml"
    compiler.Compiler().compile(build_training_pipeline(load_config(profile, list(overrides)).cluster),
                                package_path=str(out))
    spec, platform = list(yaml.safe_load_all(out.read_text()))
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())  # unknown or mistyped fields raise
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for config in executors.values():
        json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
    return spec, executors


def stage_tasks(spec: dict) -> dict:
    """The stage tasks: inside the exit handler's sub-DAG, whose exit task is `finish`."""
    return spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]


def all_tasks(spec: dict) -> dict:
    """Every container task of every DAG (the exit handler's and the ParallelFor loop's), by name."""
    return {name: task for comp in spec["components"].values() if "dag" in comp
            for name, task in comp["dag"]["tasks"].items() if not name.startswith(("for-loop", "exit-handler"))}


def test_cluster_ir_carries_each_stages_settings_from_the_profile(tmp_path):
    spec, executors = compile_ir(tmp_path, "glm4v-9b")
    cfg = load_config("glm4v-9b").cluster
    containers = {name.removeprefix("exec-"): ex["container"] for name, ex in spec["deploymentSpec"]["executors"].items()}
    assert set(containers) == {*TASK_NAMES, "finish"}
    for stage, container in containers.items():
        # finish is a small pod, like init; a stage's fan-out tasks (curate-scan) get the stage's settings
        wanted = getattr(cfg.stages, "init" if stage == "finish" else STAGE_OF_TASK[stage])
        assert container["resources"]["cpuLimit"] == float(wanted.cpu_limit), stage
        k8s = executors[f"exec-{stage}"]
        assert {m["mountPath"]: m["constant"] for m in k8s["pvcMount"]} == {
            "/checkpoints": "thinkpipe-checkpoints", "/cache": "thinkpipe-model-cache"}
        secret_env = {e["envVar"]: (s["secretName"], e["secretKey"]) for s in k8s["secretAsEnv"] for e in s["keyToEnv"]}
        webhook = {"THINKPIPE_FAILURE_WEBHOOK": ("thinkpipe-alerts", "url")} if stage == "finish" else {}
        assert secret_env == {**{v.env: (v.secret, v.key) for v in cfg.secret_env}, **webhook}  # only exit handlers post
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["THINKPIPE_CHECKPOINT_ROOT"] == "/checkpoints" and env["THINKPIPE_CACHE"] == "/cache"
        assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.thinkpipe.svc")
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env), "secrets only by reference"
    export = containers["export"]["resources"]["accelerator"]
    assert (export["resourceType"], export["resourceCount"]) == ("nvidia.com/gpu", "1")
    assert executors["exec-export"]["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    assert executors["exec-export"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert "accelerator" not in containers["evaluate"]["resources"]  # it launches a training job
    assert "accelerator" not in containers["curate"]["resources"]


def test_every_pod_carries_what_the_namespace_admits(tmp_path):
    """The network policies let in pods by label, and the namespace enforces `restricted`: each
    compiled stage pod and each training-job pod carries the labels the MLflow and MinIO policies
    select and runs as the image's non-root user (KFP's compiler adds the rest of `restricted`:
    no privilege escalation, all capabilities dropped, RuntimeDefault seccomp)."""
    from tests.conftest import ROOT

    policies = list(yaml.safe_load_all((ROOT / "manifests" / "base" / "networkpolicy.yaml").read_text()))
    selected = [peer["podSelector"]["matchLabels"] for p in policies if p and p["metadata"]["name"] in
                ("mlflow-from-pipeline", "minio-from-clients") for rule in p["spec"]["ingress"] for peer in rule["from"]
                if "thinkpipe.io/role" in peer.get("podSelector", {}).get("matchLabels", {})]
    assert len(selected) == 2
    uid = int(next(line.split()[1].split(":")[0] for line in (ROOT / "Dockerfile").read_text().splitlines()
                   if line.startswith("USER ")))
    _, executors = compile_ir(tmp_path, "glm4v-9b")
    assert len(executors) == len(TASK_NAMES) + 1  # every stage, its fan-out tasks and finish
    for name, k8s in executors.items():
        labels = k8s["podMetadata"]["labels"]
        assert all(labels.items() >= wanted.items() for wanted in selected), name
        assert k8s["securityContext"] == {"runAsUser": str(uid), "runAsGroup": str(uid), "runAsNonRoot": True}, name
    for kind in ("TrainJob", "PyTorchJob"):  # and the training jobs' pods
        cluster = load_config("glm4v-9b", [f"cluster.training_job.kind={kind}"]).cluster
        job = render_training_job(cluster, name="thinkpipe-sft-0", namespace="thinkpipe", image="i", stage="sft",
                                  spec_path="/s", processes_per_node=8, nodes=2)
        pod = (job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
               ["template"]["spec"]["template"] if kind == "TrainJob" else job["spec"]["pytorchReplicaSpecs"]["Master"]["template"])
        assert all(pod["metadata"]["labels"].items() >= wanted.items() for wanted in selected), kind
        assert pod["spec"]["securityContext"]["runAsNonRoot"] and pod["spec"]["securityContext"]["runAsUser"] == uid


def test_caching_follows_the_registry_and_the_wiring_its_upstream_links(tmp_path):
    spec, executors = compile_ir(tmp_path, "glm4v-9b")
    tasks = stage_tasks(spec)
    enabled = {name: task["cachingOptions"].get("enableCache", False) for name, task in all_tasks(spec).items()
               if name != "finish"}
    assert enabled == {task: s.kfp_caching for s in STAGES for task in s.tasks}
    assert not enabled["init"] and enabled["export"]
    finish = spec["root"]["dag"]["tasks"]["finish"]
    assert not finish["cachingOptions"].get("enableCache", False)
    assert finish["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"  # runs after a failure too
    for s in STAGES[1:]:
        task = tasks[s.name]
        # a stage's KFP cache key is its inputs: the one lineage value init makes and the upstream
        # artifacts, nothing that changes per pipeline run (the run id comes from the workflow label)
        params = task["inputs"]["parameters"]
        assert params["lineage"] == {"taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "init"}}
        assert not {"pipeline_run_name", "git_commit", "config_json"} & set(params), s.name
        producers = sorted(a["taskOutputArtifact"]["producerTask"] for a in task["inputs"].get("artifacts", {}).values()
                           if not a["taskOutputArtifact"]["producerTask"].startswith("for-loop"))  # fan-out: below
        assert producers == sorted(up for up, _ in s.upstream.values()), s.name  # the DAG is the registry's
        assert {"name": "THINKPIPE_PIPELINE_RUN", "fieldPath": "metadata.labels['workflows.argoproj.io/workflow']"} \
            in executors[f"exec-{s.name}"]["fieldPathAsEnv"]


def test_curate_fans_out_one_scan_task_a_part_keyed_on_the_curate_config(tmp_path):
    """curate-plan names the parts; a ParallelFor runs curate-scan once a part; the curate stage
    collects every part's keys. A scan's cache key is the plan's `scan_key` (curate config and data
    hash), not the lineage: a change to a later stage's config reuses the scans."""
    spec, _ = compile_ir(tmp_path, "glm4v-9b")
    tasks = stage_tasks(spec)
    loop = next(t for name, t in tasks.items() if name.startswith("for-loop"))
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--curate-plan-Output"
    assert loop["inputs"]["parameters"]["pipelinechannel--curate-plan-Output"]["taskOutputParameter"] == {
        "outputParameterKey": "Output", "producerTask": "curate-plan"}
    scan = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]["curate-scan"]
    assert set(scan["inputs"]["parameters"]) == {"item", "data_dir"}  # no lineage: the item carries scan_key
    keys = tasks["curate"]["inputs"]["artifacts"]["keys"]["taskOutputArtifact"]
    assert keys["producerTask"].startswith("for-loop")
    collected = spec["components"][loop["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
    assert [v["isArtifactList"] for v in collected.values()] == [True]


def test_secret_names_are_configuration(tmp_path):
    _, executors = compile_ir(tmp_path, "glm4v-9b", "cluster.secret_env=[{secret: team-a-minio, key: user, env: AWS_ACCESS_KEY_ID}]")
    blocks = executors["exec-curate"]["secretAsEnv"]
    assert [(b["secretName"], b["keyToEnv"]) for b in blocks] == [
        ("team-a-minio", [{"envVar": "AWS_ACCESS_KEY_ID", "secretKey": "user"}])]


def test_local_profiles_compile_without_cluster_settings(tmp_path):
    spec, executors = compile_ir(tmp_path, "tiny")
    assert set(executors) == {f"exec-{s}" for s in (*TASK_NAMES, "finish")}
    # only the namespace env and what any namespace admits (labels, non-root): no profile settings
    assert all(set(ex) == {"fieldPathAsEnv", "podMetadata", "securityContext"} for ex in executors.values())
    assert all("resources" not in ex["container"] for ex in spec["deploymentSpec"]["executors"].values())


@pytest.mark.parametrize("override, key", [
    ("cluster.stages.sft.memory_limit=lots", "cluster.stages.sft.memory_limit"),
    ("cluster.stages.evaluate.node_selector=[gpu]", "cluster.stages.evaluate.node_selector[0]"),
    ("cluster.stages.curate.tolerations=[{operator: Sometimes}]", "cluster.stages.curate.tolerations[0].operator"),
    ("cluster.secret_env=[{secret: Bad_Name, key: k, env: X}]", "cluster.secret_env[0].secret"),
    ("cluster.env=[{name: MLFLOW_TRACKING_URI, value: 'http://admin:hunter2hunter2@mlflow:5000'}]", "cluster.env[0].value"),
    ("cluster.training_job.enabled=true", "cluster.checkpoint_pvc"),
])
def test_bad_cluster_settings_fail_at_load_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config("tiny", [override])
