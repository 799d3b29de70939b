"""The one typed, frozen configuration of a thinkpipe run.

A run's config is built from a profile YAML under `configs/` (tiny, small, glm4v-9b) plus a few
`section.key=value` overrides. It is validated where it enters (the CLI, before any work) and again
in each component, so a bad key or type fails at start with the key's dotted name, never deep in a
run; a config derived in code (`derive`) is validated the same way. The resolved config is hashed,
logged to MLflow and saved with every checkpoint.

    recipe.py   the recipe's sections (tokenizer, model, curate, pretrain/sft, rlcs, evaluate, reward, export)
    cluster.py  the Kubernetes schema (per-stage pods, env and Secrets, training jobs)
    loader.py   PipelineConfig (the root), profiles, overrides, strict typing, hashes
    base.py     ConfigError, the checks, derive

    cfg = load_config("tiny", ["pretrain.num_steps=50"])
    cfg.pretrain.num_steps      # 50
    config_hash(cfg)            # sha256 of the canonical JSON
"""

from model_src.config.base import ConfigError, derive
from model_src.config.cluster import (ClusterConfig, EnvVar, SecretEnv, StageResources, StageSettings, Toleration,
                                      TrainingJobConfig)
from model_src.config.loader import (PROFILE_DIR, PipelineConfig, available_profiles, config_from_dict,
                                     config_from_json, config_hash, load_config, parse_override)
from model_src.config.recipe import (CurateConfig, DomainConfig, EvalConfig, ExportConfig, JudgeConfig, ModelConfig,
                                     RewardConfig, RLConfig, TokenizerConfig, TrainConfig)

__all__ = ["ConfigError", "derive", "ClusterConfig", "EnvVar", "SecretEnv", "StageResources", "StageSettings",
           "Toleration", "TrainingJobConfig", "PROFILE_DIR", "PipelineConfig", "available_profiles",
           "config_from_dict", "config_from_json", "config_hash", "load_config", "parse_override", "CurateConfig", "DomainConfig",
           "EvalConfig", "ExportConfig", "JudgeConfig", "ModelConfig", "RewardConfig", "RLConfig", "TokenizerConfig",
           "TrainConfig"]
