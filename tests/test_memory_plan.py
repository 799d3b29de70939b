"""The memory plan: model states as DeepSpeed's own estimators count them, parameter counts as the
real model has them, and a plan that says which stages of a profile do not fit."""

from __future__ import annotations

import pytest

from model_src.config import load_config
from model_src.memory_plan import ModelShape, model_states_bytes


@pytest.fixture(scope="module")
def tiny_model():
    from model_src.model.build import build_model, train_tokenizer

    cfg = load_config("tiny")
    tokenizer = train_tokenizer(["a small corpus for the control tokens and some words"] * 8, 300)
    return cfg, tokenizer, build_model(cfg.model, tokenizer, seed=0)


def test_the_shape_counts_the_parameters_the_real_model_has(tiny_model):
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration
    import torch

    cfg, tokenizer, model = tiny_model
    shape = ModelShape.of(cfg.model, len(tokenizer))
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.largest_param == max(p.numel() for p in model.parameters())
    big = ModelShape.of(load_config("glm4v-9b").model)
    with torch.device("meta"):
        reference = Glm4vForConditionalGeneration(Glm4vConfig())  # GLM-4.1V-9B-Thinking's configuration
    assert big.params == sum(p.numel() for p in reference.parameters())
    assert (big.layers, big.hidden, big.kv_heads, big.head_dim, big.vocab) == (40, 4096, 2, 128, 151552)


@pytest.mark.parametrize("world", [1, 8, 32])
def test_model_states_match_deepspeeds_zero_estimators(tiny_model, world):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    _, _, model = tiny_model
    params = sum(p.numel() for p in model.parameters())
    largest = max(p.numel() for p in model.parameters())
    _, zero2 = estimate_zero2_model_states_mem_needs(params, num_gpus_per_node=world, cpu_offload=False)
    assert model_states_bytes(params, largest, deepspeed=True, zero_stage=2, world=world) == zero2
    _, zero3, _ = estimate_zero3_model_states_mem_needs(params, largest, num_gpus_per_node=world, cpu_offload=False,
                                                        cpu_offload_params=False)
    assert model_states_bytes(params, largest, deepspeed=True, zero_stage=3, world=world) == zero3
    # ZeRO-2 with one process is ZeRO-0; more processes only ever shrink the per-GPU states
    assert model_states_bytes(params, largest, deepspeed=True, zero_stage=0, world=world) == \
        model_states_bytes(params, largest, deepspeed=True, zero_stage=2, world=1)
    assert zero3 <= zero2 <= 20 * params


def _thinkpipe(capsys, *argv: str) -> tuple[int, str, str]:
    """`thinkpipe ARGV` in this process (the CLI's own main): exit code, stdout, stderr."""
    from pipelines.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plan_names_the_stages_that_do_not_fit(capsys):
    code, out, err = _thinkpipe(capsys, "plan", "--profile", "tiny", "--gpu-memory", "24", "--check")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["pretrain", "sft", "rlcs", "evaluate"]
    assert "no GPU in the cluster layout" in out  # a local profile: printed, never refused
    code, out, err = _thinkpipe(capsys, "plan", "--profile", "glm4v-9b", "--check")
    # the 9B profile as committed: packed, accumulated, checkpointed training and data-parallel
    # ZeRO-2 RLCS (one rollout per forward) fit an 80 GiB GPU on 4 x 8 GPUs
    assert code == 0, out + err
    for stage in ("pretrain", "sft"):
        line = next(line for line in out.splitlines() if line.startswith(stage))
        assert " yes " in line and "1 x 8192 tokens" in line, line
    rlcs = next(line for line in out.splitlines() if line.startswith("rlcs"))
    assert rlcs.split()[1] == "32" and " yes " in rlcs and "ZeRO-2, 1 x (1024 + 2048) tokens" in rlcs, rlcs
    # RLCS as one fp32 AdamW state per process cannot hold 10.3B parameters' states on any GPU
    code, out, err = _thinkpipe(capsys, "plan", "--profile", "glm4v-9b", "--set", "rlcs.deepspeed=false",
                                "--set", "rlcs.zero_stage=0", "--check")
    assert code == 1 and "rlcs needs" in err and "pretrain" not in err
    rlcs = next(line for line in out.splitlines() if line.startswith("rlcs"))
    assert "153.4G" in rlcs and "NO (short" in rlcs  # 16 bytes x 10.29e9 parameters


def test_compile_and_submit_refuse_a_layout_that_does_not_fit(capsys):
    """Refused before anything is compiled or uploaded, naming the stage and the shortfall."""
    from model_src.config import ConfigError
    from model_src.memory_plan import PlanDoesNotFit, require_fits

    require_fits(load_config("glm4v-9b"))  # the committed layout fits
    with pytest.raises(PlanDoesNotFit, match=r"pretrain needs 35.1 GiB per GPU, 5.1 GiB more than the 30 GiB") as no:
        require_fits(load_config("glm4v-9b", ["cluster.gpu_memory_gib=30"]))
    assert "rlcs needs 32.3 GiB" in str(no.value) and "evaluate" not in str(no.value)
    assert issubclass(PlanDoesNotFit, ConfigError)  # the CLI reports it as a config error (exit 2)
    # submit refuses before it reaches any KFP server (nothing listens on port 9)
    code, out, err = _thinkpipe(capsys, "submit", "--profile", "glm4v-9b", "--set", "cluster.gpu_memory_gib=24",
                                "--host", "http://127.0.0.1:9")
    assert code == 2, out + err
    assert "does not fit its cluster layout" in err and "pretrain needs" in err
    from pipelines.compile import build_pipeline

    assert build_pipeline("training", "glm4v-9b") is not None  # compiles where it fits
