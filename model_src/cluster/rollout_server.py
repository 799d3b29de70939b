"""A vLLM rollout server pod beside an RLCS training job (`cluster.rollout_server`).

vLLM cannot live in the training image (its torch and transformers pins differ from training's),
so on a cluster RLCS's rollouts come from a pod of their own: the rollout server
(`model_src/serving/rollout_server.py`) in an image that holds vLLM and thinkpipe's code. The
launcher (model_src/cluster/training_job.py) starts it before the job, behind a Service, and
passes its URL and a folder on the checkpoint PVC to every process of the job
(THINKPIPE_ROLLOUT_SERVER_URL, THINKPIPE_ROLLOUT_WEIGHTS_DIR). The job's processes share it: each
sends its prompt groups; after every update rank 0 writes the policy's weights to that folder
and has the server reload them (model_src/rl/rollout.py: VLLMServerEngine). The pod is deleted
when the job ends, whatever its outcome.

On GPUs a weight push over NCCL (as TRL's `vllm-serve` does) would avoid the round trip through
the volume; it is not built: no machine here can hold vLLM and a GPU together to verify it.
"""

from __future__ import annotations

import time
from typing import Callable

from model_src.config import ClusterConfig
from model_src.names import POD_LABELS, SERVER_API_KEY_ENV, VLLM_API_KEY_ENV

SERVER_LABEL = "thinkpipe.io/rollout-server"


class RolloutServerFailed(RuntimeError):
    pass


def render_rollout_server(cluster: ClusterConfig, *, name: str, namespace: str, stage: str, model: str,
                          seed: int) -> tuple[dict, dict]:
    """(Pod, Service) of the rollout server serving the HF folder `model` (on the checkpoint PVC)."""
    from model_src.cluster.training_job import GPU_TOLERATION, STAGE_LABEL, job_pod_parts

    rs = cluster.rollout_server
    pod_settings, job_container = job_pod_parts(cluster, stage)
    labels = {**POD_LABELS, STAGE_LABEL: stage, SERVER_LABEL: name}
    env = [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HUB_OFFLINE", "value": "1"}]
    # the server asks for the bearer token its clients (the job's processes) send
    env += [{"name": SERVER_API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": v.secret, "key": v.key}}}
            for v in cluster.secret_env if v.env == VLLM_API_KEY_ENV]
    gpu = {"nvidia.com/gpu": str(rs.gpus)} if rs.gpus else {}
    quantities = {"cpu": rs.cpu, "memory": rs.memory, **gpu}
    container = {
        "name": "rollout-server", "image": rs.image,
        "command": ["python3", "-m", "model_src.serving.rollout_server", "--model", model, "--host", "0.0.0.0",
                    "--port", str(rs.port), "--seed", str(seed),
                    "--gpu-memory-utilization", str(rs.gpu_memory_utilization)],
        "env": env, "ports": [{"name": "http", "containerPort": rs.port}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
        "resources": {"requests": dict(quantities), "limits": dict(quantities)},
        "securityContext": job_container["securityContext"],
        "volumeMounts": job_container["volumeMounts"],
    }
    spec = {"serviceAccountName": pod_settings["serviceAccountName"], "automountServiceAccountToken": False,
            "restartPolicy": "Never", "securityContext": pod_settings["securityContext"],
            "volumes": pod_settings["volumes"], "containers": [container]}
    if rs.gpus:
        spec["tolerations"] = [GPU_TOLERATION]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
           "spec": spec}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": namespace, "labels": labels},
               "spec": {"selector": {SERVER_LABEL: name},
                        "ports": [{"name": "http", "port": rs.port, "targetPort": "http"}]}}
    return pod, service


def server_url(service: dict) -> str:
    meta = service["metadata"]
    return f"http://{meta['name']}.{meta['namespace']}.svc:{service['spec']['ports'][0]['port']}"


def _ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def start_rollout_server(api_client, pod: dict, service: dict, *, timeout_s: float, poll_seconds: float,
                         log: Callable[[str], None] = print) -> str:
    """Create the pod and its Service (replacing a pod an earlier attempt left) and wait until the
    server answers its health check; returns the URL the job's processes use."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
    stop_rollout_server(api_client, name, namespace, log=lambda _: None)  # a fresh server: fresh weights
    try:
        core.create_namespaced_pod(namespace, pod)
        core.create_namespaced_service(namespace, service)
    except ApiException as exc:
        stop_rollout_server(api_client, name, namespace, log=log)
        raise RolloutServerFailed(f"cannot create rollout server {namespace}/{name}: {exc.status} {exc.reason}: "
                                  f"{exc.body}") from exc
    log(f"rollout server {namespace}/{name}: created, waiting until it is ready (up to {timeout_s:.0f} s)")
    deadline = time.monotonic() + timeout_s
    while True:
        current = core.read_namespaced_pod(name, namespace)
        if _ready(current):
            url = server_url(service)
            log(f"rollout server {namespace}/{name}: ready at {url}")
            return url
        if current.status.phase in ("Failed", "Succeeded") or time.monotonic() > deadline:
            reason = (f"its pod {current.status.phase.lower()}" if current.status.phase in ("Failed", "Succeeded")
                      else f"not ready after {timeout_s:.0f} s (cluster.rollout_server.ready_timeout_s)")
            try:
                tail = core.read_namespaced_pod_log(name, namespace, tail_lines=40)
            except ApiException:
                tail = "(no log)"
            stop_rollout_server(api_client, name, namespace, log=log)
            raise RolloutServerFailed(f"rollout server {namespace}/{name}: {reason}\n--- its log ---\n{tail}")
        time.sleep(poll_seconds)


def stop_rollout_server(api_client, name: str, namespace: str, log: Callable[[str], None] = print) -> None:
    """Delete the pod and the Service (either may be gone already)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    for delete in (core.delete_namespaced_service, core.delete_namespaced_pod):
        try:
            delete(name, namespace)
            log(f"rollout server {namespace}/{name}: {delete.__name__.split('_')[-1]} deleted")
        except ApiException as exc:
            if exc.status != 404:
                log(f"rollout server {namespace}/{name}: could not delete it: {exc.status} {exc.reason}")
