"""DeepSpeed for the supervised stages: one engine, any number of processes.

Launch with `torchrun --nproc_per_node N` or the `deepspeed` launcher (which also passes
`--local_rank`; `parse_local_rank` accepts and ignores it); a plain in-process call runs as a world
of one. The ZeRO stage comes from the config; bf16 on GPU, fp32 on CPU, where DeepSpeed uses the
gloo backend. Every rank takes its share of each step's samples, and each rank's loss is scaled by
its share of the step's target tokens, so the gradient DeepSpeed averages is the gradient of the
global token-mean loss: N processes train like one process with the same global batch.
"""

from __future__ import annotations

import os
import socket


def parse_local_rank(argv: list[str]) -> list[str]:
    """Drop `--local_rank=N` / `--local_rank N` (added by the deepspeed launcher) from `argv`.

    >>> parse_local_rank(["--profile", "tiny", "--local_rank=1"])
    ['--profile', 'tiny']
    """
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("--local_rank="):
            os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
            continue
        if arg == "--local_rank" and i + 1 < len(argv):
            os.environ.setdefault("LOCAL_RANK", argv[i + 1])
            skip = True
            continue
        out.append(arg)
    return out


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (for a local process group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_engine(model, optimizer, scheduler, *, micro_batch: int, zero_stage: int, max_grad_norm: float,
                accumulation_steps: int = 1):
    """A DeepSpeed engine around `model` (with our optimizer and scheduler), initialising the
    process group first (a single local process gets a world of one on 127.0.0.1)."""
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    import deepspeed

    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    config = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation_steps,
        "gradient_clipping": max_grad_norm,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": cuda},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    return engine


def gathered(model, zero3: bool):
    """A context in which ZeRO-3's partitioned parameters are whole on every rank (read-only);
    a no-op context otherwise."""
    import contextlib

    if not zero3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)


def release_zero3(model) -> None:
    """After ZeRO-3 training every rank holds a shard of each parameter: gather them (a collective,
    so every rank calls this) and give the module plain, whole tensors again, detached from
    DeepSpeed's partitioning, so `save_pretrained` and later forward passes see the real weights."""
    params = list(model.parameters())
    with gathered(model, zero3=True):
        whole = [p.data.detach().clone() for p in params]
    for p, tensor in zip(params, whole):
        p.data = tensor
        for attr in [a for a in vars(p) if a.startswith("ds_")]:  # drop ZeRO's bookkeeping
            delattr(p, attr)
    for module in model.modules():  # ZeRO-3's gather/release hooks on every submodule
        for hooks in (module._forward_pre_hooks, module._forward_hooks, module._backward_hooks):
            hooks.clear()


def process_group() -> tuple[int, int]:
    """(rank, world) of this process, joining the job's process group first when it has more than
    one process (torchrun's environment; NCCL on GPUs, gloo on CPUs). A plain process is (0, 1)."""
    import torch
    import torch.distributed as dist

    rank, world = rank_and_world()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return rank, world


def barrier() -> None:
    """Wait for every rank (nothing in a world of one)."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_gather_objects(value) -> list:
    """Every rank's `value` (picklable), in rank order; [value] in a world of one."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def all_reduce_gradients(model) -> None:
    """Sum every parameter's gradient over the ranks, in one flat buffer (a rank whose share of a
    step was empty contributes zeros): plain data parallelism without a DDP wrapper, whose
    every-rank-runs-the-same-forwards contract RL's uneven per-rank batches do not keep."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    if dist.get_backend() == "nccl" and flat.device.type != "cuda":
        raise RuntimeError("NCCL reduces CUDA tensors: place the model by the device policy first")
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def all_reduce_sum(value: float) -> float:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return float(value)
    # a collective reduces tensors on its backend's device: NCCL only takes CUDA tensors
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())
