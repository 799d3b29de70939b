"""The root of a run's config and its loader: profiles, overrides, strict typing, hashes.

    cfg = load_config("tiny", ["pretrain.num_steps=50"])   # profile YAML + typed overrides, validated
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from model_src import REPO_ROOT
from model_src.config.base import ConfigError
from model_src.config.base import require as _require
from model_src.config.cluster import ClusterConfig
from model_src.config.recipe import (CurateConfig, EvalConfig, ExportConfig, ModelConfig, RewardConfig, RLConfig,
                                     TokenizerConfig, TrainConfig)

PROFILE_DIR = REPO_ROOT / "configs"


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
    reward: RewardConfig = field(default_factory=RewardConfig)
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
        judged = sorted(name for name, d in self.curate.domains.items() if d.verifier == "judge")
        _require(set(judged) <= set(self.reward.judge_domains), "reward.judge_domains",
                 f"must list the domains whose verifier is the judge ({', '.join(judged)})")
        for section in ("rlcs", "evaluate"):
            decode = getattr(self, section)
            _require(not (self.cluster.training_job.enabled and decode.rollout_engine == "vllm-server"
                          and not decode.rollout_server_url) or self.cluster.rollout_server.enabled,
                     "cluster.rollout_server.enabled", f"{section}.rollout_engine=vllm-server in a training job needs "
                     "a rollout server beside it (the training image has no vLLM): enable cluster.rollout_server "
                     f"with a vLLM + code image, or give {section}.rollout_server_url")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def section_hash(self, *sections: str) -> str:
        """Hash of the named top-level sections only: a stage's cache key uses the parts it reads."""
        plain = self.to_dict()
        return _sha256_json({name: plain[name] for name in sections})


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
    """Check `value` against a field annotation (scalars, tuples, dicts with typed keys and values,
    dataclasses); the only conversions are int->float and list->tuple."""
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
    elif origin is dict:
        key_type, value_type = typing.get_args(annotation)
        if isinstance(value, dict):
            return {_coerce(k, key_type, f"{key} key {k!r}"): _coerce(v, value_type, f"{key}.{k}")
                    for k, v in value.items()}
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
