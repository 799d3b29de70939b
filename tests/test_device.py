"""The device policy decides device and precision in one place; on a CPU it changes nothing.
These tests assert what the machine they run on has: the CPU in fp32 where there is no GPU, the
local rank's GPU in bf16 where there is one. (Training on a GPU is `make gpu-check`'s, not here.)"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from model_src.config import ConfigError, TrainConfig, load_config
from model_src.device import DevicePolicy, to_device


@pytest.mark.parametrize("cuda_available", [False, True])
def test_policy_picks_the_local_ranks_gpu_and_bf16_there_and_the_cpu_in_fp32_elsewhere(monkeypatch, cuda_available):
    monkeypatch.setenv("LOCAL_RANK", "5")  # what torchrun sets for the sixth process of a node
    policy = DevicePolicy.resolve("auto", cuda_available=cuda_available)
    if cuda_available:
        assert (policy.device, policy.compute_dtype) == (torch.device("cuda", 5), torch.bfloat16)
        assert DevicePolicy.resolve("fp32", cuda_available=True).compute_dtype is None
    else:
        assert (policy.device, policy.compute_dtype) == (torch.device("cpu"), None)
        with pytest.raises(ValueError, match="bf16 but no CUDA device"):
            DevicePolicy.resolve("bf16", cuda_available=False)  # asked for, not silently dropped
    with pytest.raises(ConfigError, match="'model.precision'"):
        load_config("tiny", ["model.precision=fp16"])


def test_policy_on_this_machine_follows_what_it_has():
    here = DevicePolicy.resolve("auto", local_rank=0)
    if torch.cuda.is_available():
        assert (here.device, here.compute_dtype) == (torch.device("cuda", 0), torch.bfloat16)
    else:
        assert (here.device, here.compute_dtype) == (torch.device("cpu"), None)


def test_on_the_cpu_placing_and_moving_are_no_ops():
    policy = DevicePolicy.resolve("auto", cuda_available=False)
    layer = torch.nn.Linear(3, 2)
    weight = layer.weight
    assert policy.place(layer) is layer and layer.weight is weight and layer.weight.dtype == torch.float32
    batch = {"input_ids": torch.arange(4), "labels": torch.ones(2), "names": ["a"]}
    moved = to_device(batch, policy.device)
    assert all(moved[k] is batch[k] for k in batch)  # the same tensors: nothing copied on the CPU
    with policy.autocast():
        assert layer(torch.ones(1, 3)).dtype == torch.float32  # no autocast on the CPU


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The tiny config, a processor and 8 SFT examples of digit rows."""
    from model_src.data.generate import GeneratorConfig, generate_corpus
    from model_src.model.build import build_processor, train_tokenizer
    from model_src.model.inputs import sft_example

    folder = tmp_path_factory.mktemp("digits")
    generate_corpus(folder, GeneratorConfig(rows={"digits": 12}))
    rows = pq.read_table(folder / "digits-train.parquet").to_pylist()
    cfg = load_config("tiny")
    processor = build_processor(train_tokenizer([t for r in rows for t in (r["question"], r["reasoning"])], 400),
                                cfg.model)
    return cfg, processor, [sft_example(processor, r) for r in rows[:8]]


def test_activation_checkpointing_is_a_switch_that_changes_memory_not_results(digits):
    """Recomputing activations in the backward pass gives the same losses, step for step."""
    from model_src.model.build import build_model
    from model_src.train.supervised import train_supervised

    cfg, processor, examples = digits
    losses = {}
    for checkpointing in (False, True):
        model = build_model(cfg.model, processor.tokenizer, seed=0)
        logged = []
        train_supervised(model, processor, examples,
                         TrainConfig(num_steps=4, batch_size=4, lr=3e-3, warmup_steps=1, log_every=1,
                                     activation_checkpointing=checkpointing),
                         seed=0, log=lambda m, s: logged.append(m["loss"]))
        assert model.is_activation_checkpointing == checkpointing
        losses[checkpointing] = logged
    assert losses[True] == pytest.approx(losses[False], rel=1e-6)


def _sum_on_rank(rank: int, store_path: str, results) -> None:
    import torch.distributed as dist

    from model_src.train.distributed import all_reduce_sum

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        results[rank] = all_reduce_sum(1.5 + rank)  # gloo reduces CPU tensors; NCCL would get CUDA ones
    finally:
        dist.destroy_process_group()


def test_all_reduce_sum_reduces_on_its_backends_device_across_two_processes(tmp_path):
    import torch.multiprocessing as mp

    from model_src.train.distributed import all_reduce_sum

    assert all_reduce_sum(2.5) == 2.5  # one process: no collective
    results = mp.Manager().dict()
    mp.spawn(_sum_on_rank, args=(str(tmp_path / "store"), results), nprocs=2, join=True)
    assert dict(results) == {0: 4.0, 1: 4.0}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: NVML initialises, which is what this "
                    "test checks is possible on a GPU-less machine by its error")
def test_mlflow_system_metrics_can_see_gpus_where_there_are_some():
    """nvidia-ml-py is installed, so MLflow's GPU monitor starts on a GPU node; on a machine without
    one it finds no NVML library (no driver) instead of reporting the package missing."""
    from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor  # imports pynvml when it is installed

    with pytest.raises(RuntimeError, match="Failed to initialize NVML"):
        GPUMonitor()


@pytest.mark.parametrize("pack_length", [0, 256])
def test_gradient_accumulation_gives_the_whole_batchs_step(digits, pack_length):
    """A step of 4 rows as 1, 2 or 4 micro-batches: the same losses and the same weights (to float
    rounding), because each micro-batch's loss is weighted by its share of the step's target tokens."""
    from model_src.model.build import build_model
    from model_src.train.supervised import train_supervised

    cfg, processor, examples = digits
    runs = {}
    start = torch.cat([p.detach().flatten() for p in build_model(cfg.model, processor.tokenizer, seed=0).parameters()])
    for micro in (0, 2, 1):
        model = build_model(cfg.model, processor.tokenizer, seed=0)
        logged = []
        train_supervised(model, processor, examples,
                         TrainConfig(num_steps=4, batch_size=4, lr=3e-3, warmup_steps=1, log_every=1,
                                     micro_batch_size=micro, pack_length=pack_length),
                         seed=0, log=lambda m, s: logged.append(m["loss"]))
        runs[micro] = (logged, torch.cat([p.detach().flatten() for p in model.parameters()]) - start)
    for micro in (2, 1):
        assert runs[micro][0] == pytest.approx(runs[0][0], rel=1e-5)
        # the weights moved the same way: Adam amplifies rounding only where a gradient is near zero
        moved, reference = runs[micro][1], runs[0][1]
        assert float((moved - reference).norm() / reference.norm()) < 1e-4  # measured: about 5e-6
    with pytest.raises(ConfigError, match="'sft.micro_batch_size'"):
        load_config("tiny", ["sft.micro_batch_size=3"])  # 8 rows do not split into 3s
