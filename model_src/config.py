"""The one typed, frozen configuration of a thinkpipe run.

A run's config is built from a profile YAML under `configs/` (tiny, small, glm4v-9b) plus a few
`section.key=value` overrides. It is validated where it enters (the CLI, before any work) and again
in each component, so a bad key or type fails at start with the key's dotted name, never deep in a
run. The resolved config is hashed, logged to MLflow and saved with every checkpoint.

    cfg = load_config("tiny", ["pretrain.num_steps=50"])
    cfg.pretrain.num_steps      # 50
    config_hash(cfg)            # sha256 of the canonical JSON
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model_src.stages.registry import STAGE_NAMES

PROFILE_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config problem, named by its dotted key."""


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 512  # BPE vocabulary learned from the corpus, before special tokens

    def validate(self, prefix: str) -> None:
        _require(self.vocab_size >= 300, f"{prefix}.vocab_size", "must be >= 300 (256 bytes + merges)")


@dataclass(frozen=True)
class ModelConfig:
    """Glm4v architecture. Names follow transformers' Glm4vTextConfig / Glm4vVisionConfig."""

    text_hidden_size: int = 128
    text_num_layers: int = 2
    text_num_heads: int = 4
    text_num_kv_heads: int = 2
    text_intermediate_size: int = 256
    partial_rotary_factor: float = 0.5
    # M-RoPE split of the rotary half-dims over (temporal, height, width); must sum to
    # head_dim * partial_rotary_factor / 2 (9B: head_dim 128 -> [8, 12, 12]).
    mrope_section: tuple[int, ...] = (2, 3, 3)
    max_position_embeddings: int = 1024
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_num_heads: int = 2
    vision_intermediate_size: int = 128
    vision_image_size: int = 112  # size the learned position table is built for; resampled to any input
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    # image processor bounds, in pixels; one LLM token covers (patch*merge)^2 = 28x28 px
    min_pixels: int = 56 * 56
    max_pixels: int = 112 * 112
    # embedding rows: 0 = the tokenizer's size; the real model has 151,552 (its released tokenizer)
    vocab_size: int = 0
    # start from released HF-format weights (model + processor): a local folder or s3://bucket/prefix;
    # empty = random init and a tokenizer learned from the corpus
    init_from: str = ""

    @property
    def text_head_dim(self) -> int:
        return self.text_hidden_size // self.text_num_heads

    def validate(self, prefix: str) -> None:
        _require(self.text_hidden_size % self.text_num_heads == 0, f"{prefix}.text_num_heads",
                 "must divide text_hidden_size")
        _require(self.text_num_heads % self.text_num_kv_heads == 0, f"{prefix}.text_num_kv_heads",
                 "must divide text_num_heads")
        _require(self.vision_hidden_size % self.vision_num_heads == 0, f"{prefix}.vision_num_heads",
                 "must divide vision_hidden_size")
        rotary_half = int(self.text_head_dim * self.partial_rotary_factor) // 2
        _require(sum(self.mrope_section) == rotary_half, f"{prefix}.mrope_section",
                 f"must sum to head_dim * partial_rotary_factor / 2 = {rotary_half}, got {list(self.mrope_section)}")
        _require(len(self.mrope_section) == 3, f"{prefix}.mrope_section", "needs 3 entries (t, h, w)")
        _require(self.vocab_size >= 0, f"{prefix}.vocab_size", "must be >= 0 (0 = the tokenizer's size)")
        _require(not self.init_from.startswith(("http://", "https://", "hf://")), f"{prefix}.init_from",
                 "must be a local folder or an s3:// URI (no model hub is reachable from the cluster)")
        _require(self.min_pixels <= self.max_pixels, f"{prefix}.min_pixels", "must be <= max_pixels")


@dataclass(frozen=True)
class CurateConfig:
    """Curation (model_src/data/curate.py). Eval rows come from the generator's eval split;
    training rows are split by id hash into RL prompts, SFT and pretraining."""

    rl_fraction: float = 0.25    # of the training rows: prompts for RLCS
    sft_fraction: float = 0.35   # of the training rows: long-CoT SFT; the remainder is pretraining
    near_dup_hamming: int = 8    # perceptual-hash bits (of 256) within which two images are near-duplicates
    template_min_rows: int = 3   # a question shared by this many eval rows is a template, not a leak
    recaption_ratio: float = 0.5  # share of pretraining captions rebuilt from the generator's facts
    max_image_pixels: int = 4096 * 4096  # decompression-bomb ceiling, checked on the header
    max_aspect_ratio: float = 200.0
    max_text_chars: int = 4096
    max_quarantine_share: float = 0.25  # gate: per domain, above this the stage fails
    min_domain_share: float = 0.02      # gate: every domain keeps at least this share of kept rows
    batch_rows: int = 512        # rows decoded at a time (streaming keeps memory flat)

    def validate(self, prefix: str) -> None:
        for name in ("rl_fraction", "sft_fraction"):
            value = getattr(self, name)
            _require(0.0 < value < 1.0, f"{prefix}.{name}", f"must be in (0, 1), got {value}")
        _require(self.rl_fraction + self.sft_fraction < 1.0, f"{prefix}.sft_fraction",
                 "rl_fraction + sft_fraction must leave rows for pretraining")
        _require(0 <= self.near_dup_hamming < 64, f"{prefix}.near_dup_hamming", "must be in [0, 64)")
        _require(self.template_min_rows >= 2, f"{prefix}.template_min_rows", "must be >= 2")
        for name in ("recaption_ratio", "max_quarantine_share", "min_domain_share"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"{prefix}.{name}", f"must be in [0, 1], got {value}")
        for name in ("max_image_pixels", "max_text_chars", "batch_rows"):
            _require(getattr(self, name) > 0, f"{prefix}.{name}", "must be > 0")
        _require(self.max_aspect_ratio >= 1.0, f"{prefix}.max_aspect_ratio", "must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Supervised training (pretraining and SFT share the loop)."""

    num_steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 100  # steps between resumable checkpoints; 0 = none
    # 0: batch_size samples per step, padded to the longest; > 0: batch_size rows of this many
    # tokens, each packed with whole samples (model_src/train/packing.py)
    pack_length: int = 0
    # train through a DeepSpeed engine (model_src/train/distributed.py); ZeRO stage 0-3
    deepspeed: bool = False
    zero_stage: int = 0
    peak_tflops: float = 0.0  # device peak for MFU; 0 = known GPUs' bf16 peak, unknown on CPU (not logged)

    def validate(self, prefix: str) -> None:
        _require(self.num_steps >= 0, f"{prefix}.num_steps", "must be >= 0 (0 only for pretrain with model.init_from)")
        _require(self.batch_size > 0, f"{prefix}.batch_size", "must be > 0")
        _require(self.lr > 0, f"{prefix}.lr", "must be > 0")
        _require(self.warmup_steps >= 0 and (self.num_steps == 0 or self.warmup_steps <= self.num_steps),
                 f"{prefix}.warmup_steps", "must be in [0, num_steps]")
        _require(self.log_every > 0, f"{prefix}.log_every", "must be > 0")
        _require(self.checkpoint_every >= 0, f"{prefix}.checkpoint_every", "must be >= 0 (0 = no checkpoints)")
        _require(self.pack_length >= 0, f"{prefix}.pack_length", "must be >= 0 (0 = padded batches)")
        _require(self.zero_stage in (0, 1, 2, 3), f"{prefix}.zero_stage", "must be 0, 1, 2 or 3")


@dataclass(frozen=True)
class RLConfig:
    """GRPO with clip-higher, no KL and no entropy term (docs/recipe.md section 4)."""

    num_iterations: int = 10
    prompts_per_iteration: int = 8
    group_size: int = 4  # rollouts per prompt
    max_new_tokens: int = 48
    lr: float = 2e-4
    clip_low: float = 0.2
    clip_high: float = 0.28  # clip-higher: a larger upper bound on the importance ratio
    temperature: float = 1.0
    top_p: float = 1.0
    updates_per_iteration: int = 2
    # curriculum sampling and dynamic expansion (model_src/rl/curriculum.py); False = uniform ablation
    curriculum: bool = True
    curriculum_floor: float = 0.1       # sampling weight of a prompt that is always right or always wrong
    curriculum_alpha: float = 0.5       # weight of the newest observed pass rate
    tier_thresholds: tuple[float, ...] = (0.8, 0.6, 0.4, 0.2)  # pass-rate bounds of tiers 0 (easy) .. 4
    expansion_ema_decay: float = 0.8
    max_expansion_ratio: float = 4.0
    offline_k: int = 0                  # pass@k rollouts per prompt to grade difficulty before RL; 0 = prior
    max_rollouts: int = 0               # rollout budget: stop once this many were drawn; 0 = no budget
    force_answer_tokens: int = 16       # answer budget after `</think><answer>` is forced at max_new_tokens; 0 = off
    checkpoint_every: int = 5           # iterations between resumable checkpoints (with curriculum state); 0 = none
    # who generates rollouts (model_src/rl/rollout.py): "auto" = vLLM when it imports and CUDA is
    # available, else transformers `generate`; "transformers"; "vllm" (the RLCS stage fails at its start if vLLM is missing)
    rollout_engine: str = "auto"

    def validate(self, prefix: str) -> None:
        _require(self.num_iterations > 0, f"{prefix}.num_iterations", "must be > 0")
        _require(self.prompts_per_iteration > 0, f"{prefix}.prompts_per_iteration", "must be > 0")
        _require(self.group_size >= 2, f"{prefix}.group_size", "must be >= 2 (advantages are group-relative)")
        _require(self.max_new_tokens > 0, f"{prefix}.max_new_tokens", "must be > 0")
        _require(0 < self.clip_low < 1, f"{prefix}.clip_low", "must be in (0, 1)")
        _require(self.clip_high >= self.clip_low, f"{prefix}.clip_high", "must be >= clip_low")
        _require(0 < self.top_p <= 1, f"{prefix}.top_p", "must be in (0, 1]")
        _require(self.temperature > 0, f"{prefix}.temperature", "must be > 0")
        _require(self.updates_per_iteration > 0, f"{prefix}.updates_per_iteration", "must be > 0")
        _require(0 < self.curriculum_floor <= 1, f"{prefix}.curriculum_floor", "must be in (0, 1]")
        _require(0 < self.curriculum_alpha <= 1, f"{prefix}.curriculum_alpha", "must be in (0, 1]")
        _require(list(self.tier_thresholds) == sorted(self.tier_thresholds, reverse=True)
                 and all(0 < t < 1 for t in self.tier_thresholds), f"{prefix}.tier_thresholds",
                 "must be decreasing values in (0, 1)")
        _require(0 <= self.expansion_ema_decay < 1, f"{prefix}.expansion_ema_decay", "must be in [0, 1)")
        _require(self.max_expansion_ratio >= 1, f"{prefix}.max_expansion_ratio", "must be >= 1")
        _require(self.offline_k >= 0, f"{prefix}.offline_k", "must be >= 0")
        _require(self.max_rollouts >= 0, f"{prefix}.max_rollouts", "must be >= 0 (0 = no budget)")
        _require(self.checkpoint_every >= 0, f"{prefix}.checkpoint_every", "must be >= 0 (0 = no checkpoints)")
        _require(self.force_answer_tokens >= 0, f"{prefix}.force_answer_tokens", "must be >= 0")
        _require(self.rollout_engine in ("auto", "transformers", "vllm"), f"{prefix}.rollout_engine",
                 f"must be auto, transformers or vllm, got {self.rollout_engine!r}")


@dataclass(frozen=True)
class EvalConfig:
    max_new_tokens: int = 64
    max_samples_per_domain: int = 64
    batch_size: int = 16
    force_answer_tokens: int = 16  # as in RL: answer budget once thinking hits max_new_tokens; 0 = off
    pass_k: int = 0  # sampled pass@k (temperature 1, top-p 1) besides greedy pass@1; 0 = greedy only
    worst_examples: int = 3  # per domain, in the reviewer's worst-examples page
    # the pretrained and SFT checkpoints are also scored, on the first this-many samples per domain
    # (the same samples for every stage), so MLflow shows each stage's gain; 0 = final model only
    checkpoint_samples_per_domain: int = 8

    def validate(self, prefix: str) -> None:
        _require(self.max_new_tokens > 0, f"{prefix}.max_new_tokens", "must be > 0")
        _require(self.pass_k >= 0, f"{prefix}.pass_k", "must be >= 0 (0 = greedy only)")
        _require(self.worst_examples >= 0, f"{prefix}.worst_examples", "must be >= 0")
        _require(0 <= self.checkpoint_samples_per_domain <= self.max_samples_per_domain,
                 f"{prefix}.checkpoint_samples_per_domain", "must be in [0, max_samples_per_domain]")
        _require(self.max_samples_per_domain > 0, f"{prefix}.max_samples_per_domain", "must be > 0")
        _require(self.batch_size > 0, f"{prefix}.batch_size", "must be > 0")
        _require(self.force_answer_tokens >= 0, f"{prefix}.force_answer_tokens", "must be >= 0")


@dataclass(frozen=True)
class ExportConfig:
    registered_model_name: str = "thinkpipe-glm4v"
    promotion_tolerance: float = 0.02  # largest per-domain accuracy drop a new champion may have
    s3_uri: str = ""  # also upload the exported folder to s3://bucket/prefix/<model>/<run id>; "" = no

    def validate(self, prefix: str) -> None:
        _require(bool(self.registered_model_name.strip()), f"{prefix}.registered_model_name", "must not be empty")
        _require(0 <= self.promotion_tolerance <= 1, f"{prefix}.promotion_tolerance", "must be in [0, 1]")
        _require(not self.s3_uri or self.s3_uri.startswith("s3://"), f"{prefix}.s3_uri", "must be an s3:// URI or empty")


# Kubernetes quantities such as "500m", "4", "16Gi", "1.5G"
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


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


@dataclass(frozen=True)
class TrainingJobConfig:
    """pretrain / sft / rlcs as a Kubeflow Training Operator PyTorchJob instead of in the stage's pod."""

    enabled: bool = False
    template: str = "manifests/templates/pytorchjob.yaml"  # relative to the repository / image root
    nodes: int = 1
    gpus_per_node: int = 8
    processes_per_node: int = 0  # torchrun processes per node; 0 = one per GPU (CPU-only jobs: set it)
    cpu_per_node: str = "32"
    memory_per_node: str = "512Gi"
    poll_seconds: float = 10.0
    timeout_hours: float = 0.0  # 0 = wait as long as it runs
    keep_failed: bool = False   # leave a failed job (and its pods) for debugging instead of deleting it

    def validate(self, prefix: str) -> None:
        _require(self.nodes >= 1, f"{prefix}.nodes", "must be >= 1")
        _require(self.gpus_per_node >= 0, f"{prefix}.gpus_per_node", "must be >= 0 (0 = CPU processes)")
        _require(self.processes_per_node >= 0, f"{prefix}.processes_per_node", "must be >= 0 (0 = one per GPU)")
        for name in ("cpu_per_node", "memory_per_node"):
            value = getattr(self, name)
            _require(bool(_QUANTITY.match(value)), f"{prefix}.{name}", f"must be a Kubernetes quantity, got {value!r}")
        _require(self.poll_seconds > 0, f"{prefix}.poll_seconds", "must be > 0")
        _require(self.timeout_hours >= 0, f"{prefix}.timeout_hours", "must be >= 0 (0 = no timeout)")


@dataclass(frozen=True)
class ClusterConfig:
    """Kubernetes settings, applied when the DAG is compiled for a cluster (kfp-kubernetes) and by
    the training-job launcher. A local `thinkpipe run` ignores them."""

    namespace: str = "thinkpipe"
    service_account: str = "thinkpipe-pipeline"
    checkpoint_pvc: str = ""  # PVC for checkpoints and training-job hand-over; "" = none
    checkpoint_mount: str = "/checkpoints"
    cache_pvc: str = ""       # PVC for the HF / S3 download cache; "" = none
    cache_mount: str = "/cache"
    env: tuple[EnvVar, ...] = ()
    secret_env: tuple[SecretEnv, ...] = ()
    stages: StageSettings = field(default_factory=StageSettings)
    training_job: TrainingJobConfig = field(default_factory=TrainingJobConfig)

    def validate(self, prefix: str) -> None:
        _require(bool(_DNS_NAME.match(self.namespace)), f"{prefix}.namespace", f"not a namespace name: {self.namespace!r}")
        for name in ("checkpoint_pvc", "cache_pvc"):
            value = getattr(self, name)
            _require(not value or bool(_DNS_NAME.match(value)), f"{prefix}.{name}", f"not a PVC name: {value!r}")
        for name in ("checkpoint_mount", "cache_mount"):
            _require(getattr(self, name).startswith("/"), f"{prefix}.{name}", "must be an absolute path")
        for i, var in enumerate(self.env):
            var.validate(f"{prefix}.env[{i}]")
        for i, var in enumerate(self.secret_env):
            var.validate(f"{prefix}.secret_env[{i}]")
        names = [v.name for v in self.env] + [v.env for v in self.secret_env]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        _require(not duplicated, f"{prefix}.env", f"variables set twice: {', '.join(duplicated)}")
        self.stages.validate(f"{prefix}.stages")
        self.training_job.validate(f"{prefix}.training_job")
        _require(not self.training_job.enabled or bool(self.checkpoint_pvc), f"{prefix}.checkpoint_pvc",
                 "the training job hands data in and out through this PVC: name one")


@dataclass(frozen=True)
class PipelineConfig:
    profile: str = "small"
    seed: int = 1234
    experiment: str = "thinkpipe"
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    sft: TrainConfig = field(default_factory=TrainConfig)
    rlcs: RLConfig = field(default_factory=RLConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def validate(self, prefix: str = "") -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate(f.name)
        _require(bool(self.experiment.strip()), "experiment", "must not be empty")
        _require(self.sft.num_steps > 0, "sft.num_steps", "must be > 0")
        _require(self.pretrain.num_steps > 0 or bool(self.model.init_from), "pretrain.num_steps",
                 "0 skips pretraining, which needs released weights in model.init_from")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def section_hash(self, *sections: str) -> str:
        """Hash of the named top-level sections only: a stage's cache key uses the parts it reads."""
        plain = self.to_dict()
        return _sha256_json({name: plain[name] for name in sections})


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def config_hash(cfg: PipelineConfig) -> str:
    return _sha256_json(cfg.to_dict())


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a field annotation; the only conversions are int->float and list->tuple."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        (item_type, _ellipsis) = typing.get_args(annotation)
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    elif dataclasses.is_dataclass(annotation):
        if isinstance(value, dict):
            return _from_dict(annotation, value, key)
    else:  # pragma: no cover - a field type this module does not know is a programming error
        raise AssertionError(f"unsupported annotation {annotation!r} for {key}")
    type_name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"config key '{key}': expected {type_name}, got {type(value).__name__} {value!r}")


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for name in data:
        if name not in known:
            where = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"unknown config key '{where}' (known keys here: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in data.items():
        where = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], where)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> PipelineConfig:
    """Strictly build and validate a PipelineConfig: unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    cfg = _from_dict(PipelineConfig, data, "")
    cfg.validate()
    return cfg


def config_from_json(text: str) -> PipelineConfig:
    return config_from_dict(json.loads(text))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'sft.lr=3e-4' -> ('sft.lr', 0.0003). The value is read as YAML, so 3, 3.0, true, [1,2] work."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"config key '{key}': cannot read value {raw!r}: {exc}") from exc
    if isinstance(value, str) and value == raw.strip():
        try:  # YAML 1.1 reads '3e-4' as a string; people mean a number
            value = float(value)
        except ValueError:
            pass
    return key, value


def load_config(profile: str = "small", overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Profile YAML + overrides -> validated PipelineConfig."""
    path = PROFILE_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile '{profile}' (available: {', '.join(available_profiles())})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile file {path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"profile file {path}: must be a mapping")
    data["profile"] = profile
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    return config_from_dict(data)
