"""Run a training stage (pretrain, sft, rlcs) as a distributed training job on the cluster.

On the cluster profile the stage's own pod only launches and watches: it copies its inputs to a
hand-over folder on the checkpoint PVC, renders the job from the profile, creates it with the
kubernetes client, streams the first node's log, waits for the job's conditions, raises with the
log tail on failure, deletes the job, and copies the outputs back. Every process runs
`torchrun -m model_src.cluster.job_main` on the hand-over spec, i.e. the same stage function a
local run calls in-process; torchrun reads nodes, node rank, rendezvous address and processes per
node from the PET_* variables both operators set.

Two kinds (`cluster.training_job.kind`):
- `TrainJob` (default): Kubeflow Trainer v2 (trainer.kubeflow.org/v1alpha1, v2.3), on the
  cluster's `torch-distributed` ClusterTrainingRuntime. Image, command, env, nodes, processes and
  resources go in `spec.trainer`; the pod settings the namespace's policies ask for (labels,
  non-root identity, service account, volumes) go in one `runtimePatches` entry. The object is
  checked against the trainer API models before it is sent (model_src/cluster/trainjob_schema.py).
- `PyTorchJob`: Training Operator v1 (kubeflow.org/v1, deprecated), for clusters that still run it.

With `rlcs.rollout_engine: vllm-server`, RLCS's job gets a vLLM rollout server pod beside it
(model_src/cluster/rollout_server.py), shared by its processes and deleted with it.

The job name is the stage's content key, so a relaunched stage (a KFP retry, a rerun) finds the
job of the earlier attempt: it attaches to one still running or already complete, and replaces a
failed one with a new job that resumes from the checkpoints the failed one left on the PVC.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from model_src.config import ClusterConfig
from model_src.names import (CACHE_ENV, CHECKPOINT_ROOT_ENV, IMAGE_UID, NAMESPACE_ENV, POD_LABELS, ROLLOUT_SERVER_ENV,
                             ROLLOUT_WEIGHTS_ENV)

SPEC_FILE, METRICS_FILE = "spec.json", "metrics.json"
STAGE_LABEL = "thinkpipe.io/stage"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PATCH_MANAGER = "thinkpipe.io/launcher"  # who owns the TrainJob's runtime patch
CONTAINER = "node"                        # the torch-distributed runtime's trainer container and replicated job
DEADLINE_GRACE_S = 600                    # the launcher waits this long past the job's own deadline
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}  # GPU nodes' taint


class TrainingJobFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class JobKind:
    """Where a kind of training job lives in the API and how it reports its end."""

    kind: str
    group: str
    version: str
    plural: str
    succeeded: str       # the condition type that means success
    first_node_pods: str  # label selector of the pod(s) of node rank 0, with {name}

    def selector(self, name: str) -> str:
        return self.first_node_pods.format(name=name)


JOB_KINDS = {
    "TrainJob": JobKind("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs", "Complete",
                        "jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name=node,"
                        "batch.kubernetes.io/job-completion-index=0"),
    "PyTorchJob": JobKind("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs", "Succeeded",
                          "training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master"),
}


def job_name(stage: str, cache_key: str) -> str:
    """A DNS-1035 name from the stage and its content key.

    >>> job_name("sft", "0f3a9c" * 10)
    'thinkpipe-sft-0f3a9c0f3a9c'
    """
    return f"thinkpipe-{stage}-{cache_key[:12]}"


def job_pod_parts(cluster: ClusterConfig, stage: str) -> tuple[dict, dict]:
    """What every job pod needs whatever the kind: (pod-level settings, container-level settings).

    Admitted by the namespace: the labels its network policies select, the `restricted` pod
    security standard's non-root identity, a service account without API rights or token."""
    tj = cluster.training_job
    pod = {
        "labels": {**POD_LABELS, STAGE_LABEL: stage},
        "serviceAccountName": tj.service_account,
        "securityContext": {"runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID,
                            "fsGroup": IMAGE_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [
            {"name": "checkpoints", "persistentVolumeClaim": {"claimName": cluster.checkpoint_pvc}},
            {"name": "cache", **({"persistentVolumeClaim": {"claimName": cluster.cache_pvc}} if cluster.cache_pvc
                                 else {"emptyDir": {}})},
            {"name": "tmp", "emptyDir": {}},  # the root filesystem is read-only
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": tj.shm_size}},
        ],
        "tolerations": [GPU_TOLERATION] if tj.gpus_per_node else [],
    }
    env = [{"name": CHECKPOINT_ROOT_ENV, "value": cluster.checkpoint_mount},
           {"name": CACHE_ENV, "value": cluster.cache_mount}, {"name": "HOME", "value": "/tmp"}]
    env += [{"name": v.name, "value": v.value} for v in cluster.env]
    env += [{"name": v.env, "valueFrom": {"secretKeyRef": {"name": v.secret, "key": v.key}}} for v in cluster.secret_env]
    gpu = {"nvidia.com/gpu": str(tj.gpus_per_node)} if tj.gpus_per_node else {}
    quantities = {"cpu": tj.cpu_per_node, "memory": tj.memory_per_node, **gpu}
    container = {
        "env": env,
        "resources": {"requests": dict(quantities), "limits": dict(quantities)},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "checkpoints", "mountPath": cluster.checkpoint_mount},
                         {"name": "cache", "mountPath": cluster.cache_mount},
                         {"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}],
    }
    return pod, container


def render_training_job(cluster: ClusterConfig, *, name: str, namespace: str, image: str, stage: str,
                        spec_path: str, processes_per_node: int, nodes: int,
                        extra_env: dict[str, str] | None = None) -> dict:
    """The job object for one stage, of the profile's kind; `extra_env` reaches every process."""
    tj = cluster.training_job
    command = ["torchrun", "-m", "model_src.cluster.job_main", spec_path]
    pod, container = job_pod_parts(cluster, stage)
    container["env"] += [{"name": k, "value": v} for k, v in (extra_env or {}).items()]
    labels = {**POD_LABELS, STAGE_LABEL: stage, **({QUEUE_LABEL: tj.queue} if tj.queue else {})}
    deadline = int(tj.timeout_hours * 3600)
    if tj.kind == "TrainJob":
        pod_patch = {"serviceAccountName": pod["serviceAccountName"], "securityContext": pod["securityContext"],
                     "volumes": pod["volumes"],
                     "containers": [{"name": CONTAINER, "securityContext": container["securityContext"],
                                     "volumeMounts": container["volumeMounts"]}]}
        if pod["tolerations"]:
            pod_patch["tolerations"] = pod["tolerations"]
        node_patch = {"name": CONTAINER, "template": {"spec": {"template": {
            "metadata": {"labels": pod["labels"]}, "spec": pod_patch}}}}
        return {
            "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": tj.runtime},
                "activeDeadlineSeconds": deadline,
                "trainer": {"image": image, "command": command, "env": container["env"], "numNodes": nodes,
                            "numProcPerNode": processes_per_node, "resourcesPerNode": container["resources"]},
                "runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
                    "replicatedJobs": [node_patch]}}}}],
            },
        }
    spec = {"serviceAccountName": pod["serviceAccountName"], "automountServiceAccountToken": False,
            "securityContext": pod["securityContext"], "volumes": pod["volumes"],
            "containers": [{"name": "pytorch", "image": image, "command": command, **container}]}
    if pod["tolerations"]:
        spec["tolerations"] = pod["tolerations"]
    template = {"metadata": {"labels": pod["labels"]}, "spec": spec}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if nodes > 1:
        replicas["Worker"] = {"replicas": nodes - 1, "restartPolicy": "Never", "template": template}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 0, "activeDeadlineSeconds": deadline},
                     "nprocPerNode": str(processes_per_node), "pytorchReplicaSpecs": replicas}}


def check_training_job(job: dict) -> None:
    """Refuse a TrainJob that Kubeflow Trainer's API models do not accept, naming every problem."""
    if job.get("kind") != "TrainJob":
        return  # the v1 CRD has no published models: its pod templates are checked in the tests
    from model_src.cluster.trainjob_schema import train_job_problems

    problems = train_job_problems(job)
    if problems:
        raise TrainingJobFailed(f"TrainJob {job['metadata'].get('name')} would be refused by the cluster: "
                                + "; ".join(problems))


def _condition(job: dict, kind: JobKind) -> tuple[str, str]:
    """The job's terminal condition (`succeeded` / Failed) and its message, or ('', '') while it runs."""
    for cond in reversed((job.get("status") or {}).get("conditions") or []):
        if cond.get("status") == "True" and cond.get("type") in (kind.succeeded, "Failed"):
            return cond["type"], cond.get("message", "")
    return "", ""


def _is_suspended(job: dict) -> bool:
    return any(c.get("type") == "Suspended" and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def run_job(api_client, job: dict, *, poll_seconds: float, timeout_s: float, keep_failed: bool = False,
            log: Callable[[str], None] = print) -> None:
    """Create the job, or attach to the one an earlier attempt left (replacing it if it failed);
    echo node 0's log; wait for the job to end or `timeout_s` to pass; raise
    TrainingJobFailed with the log tail when it fails. The job is deleted afterwards, unless it
    failed and `keep_failed` is set (a later attempt still replaces it)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    check_training_job(job)
    kind = JOB_KINDS[job["kind"]]
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    what = f"{kind.kind} {namespace}/{name}"
    api = (kind.group, kind.version, namespace, kind.plural)

    def get() -> dict | None:
        try:
            return custom.get_namespaced_custom_object(*api, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete() -> None:
        try:
            custom.delete_namespaced_custom_object(*api, name, body=client.V1DeleteOptions(propagation_policy="Foreground"))
        except ApiException as exc:
            if exc.status != 404:
                log(f"{what}: could not delete it: {exc.status} {exc.reason}")

    for attempt in range(2):
        try:
            custom.create_namespaced_custom_object(*api, job)
            log(f"{what}: created")
            break
        except ApiException as exc:
            if exc.status != 409 or attempt:
                raise TrainingJobFailed(f"cannot create {what}: {exc.status} {exc.reason}: {exc.body}") from exc
        earlier = get()
        outcome, _ = _condition(earlier or {}, kind)
        if earlier is not None and outcome != "Failed":
            log(f"{what}: an earlier attempt's job is {'complete' if outcome else 'still running'}; attaching to it")
            break
        log(f"{what}: an earlier attempt's job failed; replacing it (the new job resumes from its checkpoints)")
        delete()
        deadline = time.monotonic() + 300
        while get() is not None:  # foreground deletion: gone once its pods are
            if time.monotonic() > deadline:
                raise TrainingJobFailed(f"{what}: the failed job of an earlier attempt is still being deleted after "
                                        "300 s; delete it by hand and retry")
            time.sleep(poll_seconds)

    follower = _LogFollower(core, namespace, kind.selector(name), name, log, poll_seconds)
    follower.start()  # in a thread: following a log blocks, and a hung job must still time out
    deadline = time.monotonic() + timeout_s
    outcome, message, told_suspended = "", "", False
    try:
        while True:
            current = get() or {}
            outcome, message = _condition(current, kind)
            if _is_suspended(current) and not told_suspended:
                queue = current["metadata"].get("labels", {}).get(QUEUE_LABEL)
                log(f"{what}: suspended, waiting for admission" + (f" by Kueue queue {queue}" if queue else ""))
                told_suspended = True
            if outcome:
                break
            if time.monotonic() > deadline:
                raise TrainingJobFailed(f"{what} still running after {timeout_s:.0f} s (cluster.training_job."
                                        "timeout_hours): giving up on it")
            time.sleep(poll_seconds)
        follower.join(timeout=30)  # the log's last lines, written as the job ended
        if outcome == "Failed":
            raise TrainingJobFailed(f"{what} failed: {message}\n--- last lines of node 0's log ---\n"
                                    + "\n".join(follower.tail))
        log(f"{what}: succeeded")
    finally:
        follower.stop.set()
        if not (outcome == "Failed" and keep_failed):
            delete()


class _LogFollower(threading.Thread):
    """Echo node 0's log, keeping its last lines: waits for the pod to start, follows it to its end."""

    def __init__(self, core, namespace: str, selector: str, name: str, log, poll_seconds: float):
        super().__init__(daemon=True, name=f"log-{name}")
        self.core, self.namespace, self.selector, self.name = core, namespace, selector, name
        self.log, self.poll_seconds = log, poll_seconds
        self.tail: deque[str] = deque(maxlen=40)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
                if pods and pods[0].status.phase != "Pending":
                    return self._follow(pods[0].metadata.name)
                self.stop.wait(self.poll_seconds)
        except Exception as exc:  # noqa: BLE001 (the job's conditions, not its log, decide the outcome)
            self.log(f"[{self.name}] (log unavailable: {exc})")

    def _follow(self, pod: str) -> None:
        response = self.core.read_namespaced_pod_log(pod, self.namespace, follow=True, _preload_content=False)
        buffered = b""
        for chunk in response.stream(4096):
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                self._line(line.decode(errors="replace"))
        if buffered:
            self._line(buffered.decode(errors="replace"))
        response.release_conn()

    def _line(self, text: str) -> None:
        self.tail.append(text)
        self.log(f"[{self.name}] {text}")


def kubernetes_api_client():
    """In a pod: its service account; elsewhere: the kube config ($KUBECONFIG)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:  # the client reads $KUBECONFIG once, at import: pass it explicitly
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.ApiClient()


# the stages that may decode through a rollout server, and the input holding the model it starts with
ROLLOUT_MODEL_INPUT = {"rlcs": "sft_model", "evaluate": "model"}


def needs_rollout_server(cfg, stage: str) -> bool:
    """Whether this stage's job gets a rollout server pod beside it (RLCS or evaluation decoding
    through vLLM, no server URL of its own, `cluster.rollout_server` on)."""
    section = getattr(cfg, stage)
    return (stage in ROLLOUT_MODEL_INPUT and section.rollout_engine == "vllm-server"
            and not section.rollout_server_url and cfg.cluster.rollout_server.enabled)


def run_training_job(ctx) -> dict[str, float]:
    """A stage's `work` on the cluster profile: hand over, run the training job, take the outputs back."""
    from model_src.lineage import hash_path

    cluster = ctx.cfg.cluster
    if ctx.checkpoint_dir is None:
        raise TrainingJobFailed(f"stage {ctx.stage}: the training job needs THINKPIPE_CHECKPOINT_ROOT on the "
                                f"checkpoint PVC ({cluster.checkpoint_pvc}) to hand data over")
    handover = ctx.checkpoint_dir / "job"
    inputs = {}
    for name, path in ctx.inputs.items():
        dest = handover / "inputs" / name
        if not (dest.exists() and hash_path(dest) == hash_path(path)):  # a relaunch reuses the copy
            shutil.rmtree(dest, ignore_errors=True)
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, dest)
        inputs[name] = str(dest)
    outputs = {name: str(handover / "outputs" / name) for name in ctx.outputs}
    spec = {"stage": ctx.stage, "lineage": ctx.lineage.to_json(), "scope": ctx.scope.to_json(),
            "inputs": inputs, "outputs": outputs, "run_id": ctx.run_id, "checkpoint_dir": str(ctx.checkpoint_dir)}
    (handover / METRICS_FILE).unlink(missing_ok=True)
    (handover / SPEC_FILE).write_text(json.dumps(spec, indent=2))
    tj = cluster.training_job
    # every training stage, RLCS's data-parallel GRPO loop included, runs on the whole job
    nodes, per_node = tj.nodes, tj.processes_per_node or max(tj.gpus_per_node, 1)
    name, namespace = job_name(ctx.stage, ctx.checkpoint_dir.name), os.environ.get(NAMESPACE_ENV, cluster.namespace)
    api = kubernetes_api_client()
    rollout_server, extra_env = None, {}
    if needs_rollout_server(ctx.cfg, ctx.stage):  # RLCS's rollouts / evaluation from a vLLM pod beside the job
        from model_src.cluster.rollout_server import render_rollout_server, start_rollout_server

        pod, service = render_rollout_server(cluster, name=f"{name}-rollout", namespace=namespace, stage=ctx.stage,
                                             model=inputs[ROLLOUT_MODEL_INPUT[ctx.stage]], seed=ctx.cfg.seed + 2)
        url = start_rollout_server(api, pod, service, timeout_s=cluster.rollout_server.ready_timeout_s,
                                   poll_seconds=tj.poll_seconds)
        rollout_server = pod["metadata"]["name"]
        extra_env = {ROLLOUT_SERVER_ENV: url, ROLLOUT_WEIGHTS_ENV: str(handover / "rollout-weights")}
    job = render_training_job(cluster, name=name, namespace=namespace, image=ctx.lineage.image, stage=ctx.stage,
                              spec_path=str(handover / SPEC_FILE), processes_per_node=per_node, nodes=nodes,
                              extra_env=extra_env)
    try:
        run_job(api, job, poll_seconds=tj.poll_seconds, timeout_s=tj.timeout_hours * 3600 + DEADLINE_GRACE_S,
                keep_failed=tj.keep_failed)
    finally:
        if rollout_server:
            from model_src.cluster.rollout_server import stop_rollout_server

            stop_rollout_server(api, rollout_server, namespace)
    metrics_file = handover / METRICS_FILE
    if not metrics_file.is_file():
        raise TrainingJobFailed(f"training job for {ctx.stage} succeeded but wrote no {metrics_file}")
    for name, dest in ctx.outputs.items():
        shutil.copytree(outputs[name], dest, dirs_exist_ok=True)
    return json.loads(metrics_file.read_text())
