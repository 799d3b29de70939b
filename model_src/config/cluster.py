"""The cluster schema: per-stage pod settings, environment and Secrets, the training-job launcher.

Applied when the DAG is compiled for a cluster (pipelines/cluster.py) and by the training-job
launcher (model_src/cluster/training_job.py); a local run ignores it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from model_src.config.base import require as _require
from model_src.stages.registry import STAGE_NAMES

# Kubernetes quantities such as "500m", "4", "16Gi", "1.5G"
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# an OCI image repository: registry host[:port] / path (image/pin.py checks the same form)
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+$")


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Exists"  # Exists | Equal
    value: str = ""
    effect: str = ""          # NoSchedule | PreferNoSchedule | NoExecute | "" (every effect)

    def validate(self, prefix: str) -> None:
        _require(self.operator in ("Exists", "Equal"), f"{prefix}.operator", "must be Exists or Equal")
        _require(self.effect in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"), f"{prefix}.effect",
                 "must be NoSchedule, PreferNoSchedule, NoExecute or empty")
        _require(self.operator == "Equal" or not self.value, f"{prefix}.value", "only Equal takes a value")


@dataclass(frozen=True)
class StageResources:
    """What one stage's pod asks Kubernetes for. Empty quantities are left unset."""

    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    gpus: int = 0
    accelerator: str = "nvidia.com/gpu"
    node_selector: tuple[str, ...] = ()  # "label=value" pairs
    tolerations: tuple[Toleration, ...] = ()

    def validate(self, prefix: str) -> None:
        for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
            value = getattr(self, name)
            _require(not value or bool(_QUANTITY.match(value)), f"{prefix}.{name}",
                     f"must be a Kubernetes quantity such as 4, 500m or 16Gi, got {value!r}")
        _require(self.gpus >= 0, f"{prefix}.gpus", "must be >= 0")
        for i, pair in enumerate(self.node_selector):
            _require(pair.count("=") == 1 and all(pair.split("=")), f"{prefix}.node_selector[{i}]",
                     f"must look like label=value, got {pair!r}")
        for i, toleration in enumerate(self.tolerations):
            toleration.validate(f"{prefix}.tolerations[{i}]")


def _validate_stage_settings(self, prefix: str) -> None:
    for name in STAGE_NAMES:
        getattr(self, name).validate(f"{prefix}.{name}")


# `cluster.stages.<stage>`: one StageResources per stage of the registry, so a new stage gets its
# settings by being listed there
StageSettings = dataclasses.make_dataclass(
    "StageSettings", [(name, StageResources, field(default_factory=StageResources)) for name in STAGE_NAMES],
    frozen=True, namespace={"validate": _validate_stage_settings, "__module__": __name__})


@dataclass(frozen=True)
class EnvVar:
    """A plain (non-secret) environment variable for every stage pod, e.g. MLFLOW_TRACKING_URI."""

    name: str = ""
    value: str = ""

    def validate(self, prefix: str) -> None:
        from model_src.secret_scan import find_secrets

        _require(bool(_ENV_NAME.match(self.name)), f"{prefix}.name", f"not an environment variable name: {self.name!r}")
        _require(not find_secrets(f"{self.name}={self.value}"), f"{prefix}.value",
                 "looks like a secret value: put it in a Kubernetes Secret and list it under cluster.secret_env")


@dataclass(frozen=True)
class SecretEnv:
    """Environment variable `env` from key `key` of the Kubernetes Secret `secret` (names only)."""

    secret: str = ""
    key: str = ""
    env: str = ""

    def validate(self, prefix: str) -> None:
        _require(bool(_DNS_NAME.match(self.secret)), f"{prefix}.secret", f"not a Secret name: {self.secret!r}")
        _require(bool(self.key), f"{prefix}.key", "must not be empty")
        _require(bool(_ENV_NAME.match(self.env)), f"{prefix}.env", f"not an environment variable name: {self.env!r}")


JOB_KINDS = ("TrainJob", "PyTorchJob")


@dataclass(frozen=True)
class TrainingJobConfig:
    """pretrain / sft / rlcs as a distributed training job instead of in the stage's pod: a Kubeflow
    Trainer v2 `TrainJob` (trainer.kubeflow.org/v1alpha1, Trainer v2.3) by default, or a Training
    Operator v1 `PyTorchJob` for clusters that still run it."""

    enabled: bool = False
    kind: str = "TrainJob"             # TrainJob (Kubeflow Trainer v2.3+) | PyTorchJob (Training Operator v1)
    runtime: str = "torch-distributed"  # the ClusterTrainingRuntime a TrainJob references
    queue: str = ""                    # Kueue LocalQueue: the job waits for admission there ("" = no Kueue)
    service_account: str = "thinkpipe-trainer"  # the job pods' identity: no API rights, no mounted token
    nodes: int = 1
    gpus_per_node: int = 8
    processes_per_node: int = 0  # torchrun processes per node; 0 = one per GPU (CPU-only jobs: set it)
    cpu_per_node: str = "32"
    memory_per_node: str = "512Gi"
    shm_size: str = "64Gi"       # /dev/shm for NCCL and data-loader workers
    poll_seconds: float = 10.0
    timeout_hours: float = 168.0  # the job's active deadline; the launcher gives up 10 minutes later
    keep_failed: bool = False   # leave a failed job (and its pods) for debugging instead of deleting it

    def validate(self, prefix: str) -> None:
        _require(self.kind in JOB_KINDS, f"{prefix}.kind", f"must be one of {', '.join(JOB_KINDS)}, got {self.kind!r}")
        for name in ("runtime", "service_account"):
            value = getattr(self, name)
            _require(bool(_DNS_NAME.match(value)), f"{prefix}.{name}", f"not a Kubernetes name: {value!r}")
        _require(not self.queue or bool(_DNS_NAME.match(self.queue)), f"{prefix}.queue",
                 f"not a Kueue LocalQueue name: {self.queue!r}")
        _require(self.nodes >= 1, f"{prefix}.nodes", "must be >= 1")
        _require(self.gpus_per_node >= 0, f"{prefix}.gpus_per_node", "must be >= 0 (0 = CPU processes)")
        _require(self.processes_per_node >= 0, f"{prefix}.processes_per_node", "must be >= 0 (0 = one per GPU)")
        for name in ("cpu_per_node", "memory_per_node", "shm_size"):
            value = getattr(self, name)
            _require(bool(_QUANTITY.match(value)), f"{prefix}.{name}", f"must be a Kubernetes quantity, got {value!r}")
        _require(self.poll_seconds > 0, f"{prefix}.poll_seconds", "must be > 0")
        _require(self.timeout_hours > 0, f"{prefix}.timeout_hours",
                 "must be > 0: a job that hangs (a lost NCCL peer) should end, not hold its GPUs forever")


@dataclass(frozen=True)
class RolloutServerConfig:
    """A vLLM rollout server pod beside an RLCS training job (`rlcs.rollout_engine: vllm-server`):
    the training image has no vLLM (its pins conflict with training's), so the server runs from an
    image of its own (vLLM + thinkpipe's code), shared by every process of the job; weights go to it
    through the checkpoint PVC after each update (model_src/cluster/rollout_server.py)."""

    enabled: bool = False
    image: str = ""             # repository[:tag]@sha256:<digest> of the vLLM + code image
    gpus: int = 1
    cpu: str = "8"
    memory: str = "64Gi"
    port: int = 8100
    gpu_memory_utilization: float = 0.9
    ready_timeout_s: float = 1800.0  # vLLM loads the model and captures graphs before it is healthy

    def validate(self, prefix: str) -> None:
        if not self.enabled:
            return
        _require(bool(re.match(r"^\S+@sha256:[0-9a-f]{64}$", self.image)), f"{prefix}.image",
                 f"must name an image by digest (repository@sha256:...), got {self.image!r}")
        _require(self.gpus >= 0, f"{prefix}.gpus", "must be >= 0")
        for name in ("cpu", "memory"):
            value = getattr(self, name)
            _require(bool(_QUANTITY.match(value)), f"{prefix}.{name}", f"must be a Kubernetes quantity, got {value!r}")
        _require(1024 <= self.port <= 65535, f"{prefix}.port", "must be an unprivileged port (1024-65535)")
        _require(0 < self.gpu_memory_utilization <= 1, f"{prefix}.gpu_memory_utilization", "must be in (0, 1]")
        _require(self.ready_timeout_s > 0, f"{prefix}.ready_timeout_s", "must be > 0")


@dataclass(frozen=True)
class ClusterConfig:
    """Kubernetes settings, applied when the DAG is compiled for a cluster (kfp-kubernetes) and by
    the training-job launcher. A local `thinkpipe run` ignores them."""

    namespace: str = "thinkpipe"
    service_account: str = "thinkpipe-pipeline"
    # where the pinned component image was pushed (same digest in any registry); "" = the pin's own
    # repository (components/image.py)
    image_repository: str = ""
    # a Secret whose key `url` is the webhook the exit handlers post a failed run to ("" = none)
    failure_webhook_secret: str = ""
    # the DVC remote the retraining DAG pulls new data from (a name in the repository's .dvc/config);
    # "" = the repository's default remote, which is a local path in this project: fine on a laptop,
    # absent in a pod, so a cluster profile names its S3 remote here
    dvc_remote: str = ""
    checkpoint_pvc: str = ""  # PVC for checkpoints and training-job hand-over; "" = none
    checkpoint_mount: str = "/checkpoints"
    cache_pvc: str = ""       # PVC for the HF / S3 download cache; "" = none
    cache_mount: str = "/cache"
    env: tuple[EnvVar, ...] = ()
    secret_env: tuple[SecretEnv, ...] = ()
    stages: StageSettings = field(default_factory=StageSettings)
    training_job: TrainingJobConfig = field(default_factory=TrainingJobConfig)
    rollout_server: RolloutServerConfig = field(default_factory=RolloutServerConfig)
    # memory of one GPU of the cluster's GPU nodes: `thinkpipe compile` and `submit` refuse a layout
    # whose memory plan (model_src/memory_plan.py) does not fit it
    gpu_memory_gib: float = 80.0

    def validate(self, prefix: str) -> None:
        _require(bool(_DNS_NAME.match(self.namespace)), f"{prefix}.namespace", f"not a namespace name: {self.namespace!r}")
        _require(not self.image_repository or bool(_REPOSITORY.match(self.image_repository)),
                 f"{prefix}.image_repository", f"not an image repository (registry/path): {self.image_repository!r}")
        _require(not self.dvc_remote or bool(re.fullmatch(r"[A-Za-z0-9_.-]+", self.dvc_remote)), f"{prefix}.dvc_remote",
                 f"not a DVC remote name: {self.dvc_remote!r}")
        for name in ("checkpoint_pvc", "cache_pvc", "failure_webhook_secret"):
            value = getattr(self, name)
            _require(not value or bool(_DNS_NAME.match(value)), f"{prefix}.{name}", f"not a Kubernetes name: {value!r}")
        for name in ("checkpoint_mount", "cache_mount"):
            _require(getattr(self, name).startswith("/"), f"{prefix}.{name}", "must be an absolute path")
        for i, var in enumerate(self.env):
            var.validate(f"{prefix}.env[{i}]")
        for i, var in enumerate(self.secret_env):
            var.validate(f"{prefix}.secret_env[{i}]")
        names = [v.name for v in self.env] + [v.env for v in self.secret_env]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        _require(not duplicated, f"{prefix}.env", f"variables set twice: {', '.join(duplicated)}")
        _require(self.gpu_memory_gib > 0, f"{prefix}.gpu_memory_gib", "must be > 0")
        self.stages.validate(f"{prefix}.stages")
        self.training_job.validate(f"{prefix}.training_job")
        self.rollout_server.validate(f"{prefix}.rollout_server")
        _require(not self.training_job.enabled or bool(self.checkpoint_pvc), f"{prefix}.checkpoint_pvc",
                 "the training job hands data in and out through this PVC: name one")
