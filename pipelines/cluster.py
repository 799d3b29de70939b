"""Per-stage Kubernetes settings (kfp-kubernetes) from the profile's `cluster` section.

Applied at compile time only: `thinkpipe compile --profile glm4v-9b` writes them into the IR's
platform spec. `kfp.local` ignores them, so a laptop run of the same DAG is unaffected.
"""

from __future__ import annotations

from collections import defaultdict

from kfp import kubernetes
from kfp.dsl import PipelineTask

from components.image import image_reference
from model_src.config import ClusterConfig
from model_src.names import (CACHE_ENV, CHECKPOINT_ROOT_ENV, FAILURE_WEBHOOK_ENV, IMAGE_UID, NAMESPACE_ENV,
                             PIPELINE_RUN_ENV, POD_LABELS)


def apply_cluster_settings(task: PipelineTask, stage: str, cluster: ClusterConfig) -> None:
    res = getattr(cluster.stages, stage)
    task.container_spec.image = image_reference(cluster.image_repository)  # the pinned digest, in the profile's registry
    # admitted by the namespace: the labels its network policies select, and a non-root identity
    # for `restricted` (KFP's compiler adds no privilege escalation, drop ALL, RuntimeDefault seccomp)
    for key, value in POD_LABELS.items():
        kubernetes.add_pod_label(task, label_key=key, label_value=value)
    kubernetes.set_security_context(task, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID, run_as_non_root=True)
    for setter, value in ((task.set_cpu_request, res.cpu_request), (task.set_cpu_limit, res.cpu_limit),
                          (task.set_memory_request, res.memory_request), (task.set_memory_limit, res.memory_limit)):
        if value:
            setter(value)
    if res.gpus:
        task.set_accelerator_type(res.accelerator)
        task.set_accelerator_limit(res.gpus)
    for pair in res.node_selector:
        label, value = pair.split("=")
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    for t in res.tolerations:
        kubernetes.add_toleration(task, key=t.key or None, operator=t.operator, value=t.value or None,
                                  effect=t.effect or None)
    if cluster.checkpoint_pvc:
        kubernetes.mount_pvc(task, pvc_name=cluster.checkpoint_pvc, mount_path=cluster.checkpoint_mount)
        task.set_env_variable(CHECKPOINT_ROOT_ENV, cluster.checkpoint_mount)
    if cluster.cache_pvc:
        kubernetes.mount_pvc(task, pvc_name=cluster.cache_pvc, mount_path=cluster.cache_mount)
        task.set_env_variable(CACHE_ENV, cluster.cache_mount)
    for var in cluster.env:
        task.set_env_variable(var.name, var.value)
    by_secret: dict[str, dict[str, str]] = defaultdict(dict)  # one volume-free env block per Secret
    for var in cluster.secret_env:
        by_secret[var.secret][var.key] = var.env
    for secret, keys in by_secret.items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=keys)
    # the training-job launcher creates its PyTorchJob in the namespace its own pod runs in
    kubernetes.use_field_path_as_env(task, env_name=NAMESPACE_ENV, field_path="metadata.namespace")
    # which pipeline run this pod belongs to (its Argo workflow), to find the run's MLflow parent;
    # from the environment, so it is not part of the stage's cache key
    kubernetes.use_field_path_as_env(task, env_name=PIPELINE_RUN_ENV,
                                     field_path="metadata.labels['workflows.argoproj.io/workflow']")


def apply_exit_handler_settings(task: PipelineTask, cluster: ClusterConfig) -> None:
    """An exit handler's pod: an `init`-sized pod that also gets the failure webhook's URL from its
    Secret (only the exit handlers post; the URL is a credential)."""
    apply_cluster_settings(task, "init", cluster)
    if cluster.failure_webhook_secret:
        kubernetes.use_secret_as_env(task, secret_name=cluster.failure_webhook_secret,
                                     secret_key_to_env={"url": FAILURE_WEBHOOK_ENV})
