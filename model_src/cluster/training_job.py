"""Run a training stage (pretrain, sft, rlcs) as a Kubeflow Training Operator PyTorchJob.

On the cluster profile the stage's own pod only launches and watches: it copies its inputs to a
hand-over folder on the checkpoint PVC, renders the job from manifests/templates/pytorchjob.yaml
(image, command, replicas, GPUs, env and Secret references from the profile), creates it with the
kubernetes client, streams the master's log, waits, raises with the log tail on failure, deletes
the job, and copies the outputs back. Every replica runs `torchrun -m model_src.cluster.job_main`
on the hand-over spec, i.e. the same stage function a local run calls in-process. The job name is
the stage's content key, so a relaunched stage finds (and waits for) a job that is still running,
and the job's checkpoints live under the same key, so a new job resumes where the last one stopped.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from collections import deque
from typing import Callable

import yaml

from model_src import REPO_ROOT
from model_src.config import ClusterConfig
from model_src.names import CACHE_ENV, CHECKPOINT_ROOT_ENV, NAMESPACE_ENV

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
JOB_LABEL = "training.kubeflow.org/job-name"
REPLICA_LABEL = "training.kubeflow.org/replica-type"
SPEC_FILE, METRICS_FILE = "spec.json", "metrics.json"


class TrainingJobFailed(RuntimeError):
    pass


def job_name(stage: str, cache_key: str) -> str:
    """A DNS-1035 name from the stage and its content key.

    >>> job_name("sft", "0f3a9c" * 10)
    'thinkpipe-sft-0f3a9c0f3a9c'
    """
    return f"thinkpipe-{stage}-{cache_key[:12]}"


def render_training_job(cluster: ClusterConfig, *, name: str, namespace: str, image: str, stage: str,
                        spec_path: str, processes_per_node: int, nodes: int) -> dict:
    """The PyTorchJob object for one stage, from the template and the profile."""
    tj = cluster.training_job
    job = yaml.safe_load((REPO_ROOT / tj.template).read_text())
    job["metadata"].update(name=name, namespace=namespace)
    job["metadata"]["labels"] = {**job["metadata"].get("labels", {}), "thinkpipe.io/stage": stage}
    job["spec"]["nprocPerNode"] = str(processes_per_node)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    base_pod = replicas["Master"]["template"]
    rendered = {}
    for role, count in (("Master", 1), ("Worker", nodes - 1)):
        if count == 0:
            continue
        pod = copy.deepcopy(base_pod)  # the template shares one pod spec between roles (a YAML anchor)
        spec = pod["spec"]
        spec["serviceAccountName"] = cluster.service_account
        [container] = spec["containers"]
        container["image"] = image
        # torchrun takes nodes, node rank, rendezvous address and processes per node from the
        # PET_* variables the training operator sets on every replica
        container["command"] = ["torchrun", "-m", "model_src.cluster.job_main", spec_path]
        env = {e["name"]: e for e in container.get("env", [])}
        env[CHECKPOINT_ROOT_ENV] = {"name": CHECKPOINT_ROOT_ENV, "value": cluster.checkpoint_mount}
        env[CACHE_ENV] = {"name": CACHE_ENV, "value": cluster.cache_mount}
        for var in cluster.env:
            env[var.name] = {"name": var.name, "value": var.value}
        for var in cluster.secret_env:
            env[var.env] = {"name": var.env, "valueFrom": {"secretKeyRef": {"name": var.secret, "key": var.key}}}
        container["env"] = list(env.values())
        gpu = {"nvidia.com/gpu": str(tj.gpus_per_node)} if tj.gpus_per_node else {}
        container["resources"] = {"requests": {"cpu": tj.cpu_per_node, "memory": tj.memory_per_node, **gpu},
                                  "limits": {"cpu": tj.cpu_per_node, "memory": tj.memory_per_node, **gpu}}
        if not tj.gpus_per_node:
            spec.pop("tolerations", None)
        for volume in spec["volumes"]:
            if volume["name"] == "checkpoints":
                volume["persistentVolumeClaim"]["claimName"] = cluster.checkpoint_pvc
            elif volume["name"] == "cache":
                if cluster.cache_pvc:
                    volume["persistentVolumeClaim"]["claimName"] = cluster.cache_pvc
                else:
                    volume.clear()
                    volume.update(name="cache", emptyDir={})
        for mount in container["volumeMounts"]:
            if mount["name"] == "checkpoints":
                mount["mountPath"] = cluster.checkpoint_mount
            elif mount["name"] == "cache":
                mount["mountPath"] = cluster.cache_mount
        rendered[role] = {"replicas": count, "restartPolicy": "Never", "template": pod}
    job["spec"]["pytorchReplicaSpecs"] = rendered
    return job


def _condition(job: dict) -> str:
    """The job's terminal condition (Succeeded / Failed) or '' while it runs."""
    for cond in reversed(job.get("status", {}).get("conditions") or []):
        if cond.get("status") == "True" and cond.get("type") in ("Succeeded", "Failed"):
            return cond["type"]
    return ""


def run_job(api_client, job: dict, *, poll_seconds: float, timeout_s: float = 0.0, keep_failed: bool = False,
            log: Callable[[str], None] = print) -> None:
    """Create the job (or attach to a running one of the same name), stream the master's log,
    wait for it to end; raise TrainingJobFailed with the log tail when it fails. The job is
    deleted afterwards, unless it failed and `keep_failed` is set."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
        log(f"training job {namespace}/{name}: created")
    except ApiException as exc:
        if exc.status != 409:
            raise TrainingJobFailed(f"cannot create training job {namespace}/{name}: {exc.status} {exc.reason}: "
                                    f"{exc.body}") from exc
        log(f"training job {namespace}/{name}: already exists (an earlier attempt), attaching to it")
    tail: deque[str] = deque(maxlen=40)
    deadline = time.monotonic() + timeout_s if timeout_s else None
    streamed, outcome = False, ""
    try:
        while True:
            current = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            outcome = _condition(current)
            if not streamed:
                streamed = _stream_master_log(core, namespace, name, tail, log, finished=bool(outcome))
            if outcome:
                break
            if deadline and time.monotonic() > deadline:
                raise TrainingJobFailed(f"training job {namespace}/{name} still running after {timeout_s:.0f} s")
            time.sleep(poll_seconds)
        if outcome == "Failed":
            message = next((c.get("message", "") for c in reversed(current["status"]["conditions"])
                            if c.get("type") == "Failed"), "")
            raise TrainingJobFailed(f"training job {namespace}/{name} failed: {message}\n"
                                    f"--- last lines of the master's log ---\n" + "\n".join(tail))
        log(f"training job {namespace}/{name}: succeeded")
    finally:
        if not (outcome == "Failed" and keep_failed):
            try:
                custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                       body=client.V1DeleteOptions(propagation_policy="Foreground"))
            except ApiException as exc:
                if exc.status != 404:
                    log(f"training job {namespace}/{name}: could not delete it: {exc.status} {exc.reason}")


def _stream_master_log(core, namespace: str, name: str, tail: deque, log, finished: bool) -> bool:
    """Follow the master pod's log to its end (returns True), or False while no master pod runs."""
    pods = core.list_namespaced_pod(namespace, label_selector=f"{JOB_LABEL}={name},{REPLICA_LABEL}=master").items
    if not pods or (pods[0].status.phase == "Pending" and not finished):
        return False
    response = core.read_namespaced_pod_log(pods[0].metadata.name, namespace, follow=True, _preload_content=False)
    buffered = b""
    for chunk in response.stream(4096):
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            tail.append(text)
            log(f"[{name}] {text}")
    if buffered:
        tail.append(buffered.decode(errors="replace"))
        log(f"[{name}] {tail[-1]}")
    response.release_conn()
    return True


def kubernetes_api_client():
    """In a pod: its service account; elsewhere: the kube config ($KUBECONFIG)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:  # the client reads $KUBECONFIG once, at import: pass it explicitly
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.ApiClient()


def run_training_job(ctx) -> dict[str, float]:
    """A stage's `work` on the cluster profile: hand over, run the PyTorchJob, take the outputs back."""
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
    job = render_training_job(cluster, name=job_name(ctx.stage, ctx.checkpoint_dir.name),
                              namespace=os.environ.get(NAMESPACE_ENV, cluster.namespace),
                              image=ctx.lineage.image, stage=ctx.stage, spec_path=str(handover / SPEC_FILE),
                              processes_per_node=per_node, nodes=nodes)
    run_job(kubernetes_api_client(), job, poll_seconds=tj.poll_seconds, timeout_s=tj.timeout_hours * 3600,
            keep_failed=tj.keep_failed)
    metrics_file = handover / METRICS_FILE
    if not metrics_file.is_file():
        raise TrainingJobFailed(f"training job for {ctx.stage} succeeded but wrote no {metrics_file}")
    for name, dest in ctx.outputs.items():
        shutil.copytree(outputs[name], dest, dirs_exist_ok=True)
    return json.loads(metrics_file.read_text())
