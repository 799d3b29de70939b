"""The device policy: the one place that decides where a stage computes and in what precision.

- device: this process's CUDA device (`LOCAL_RANK` under torchrun, else 0) when CUDA is available,
  else the CPU;
- precision (`model.precision`): "auto" computes in bf16 on a GPU (weights and optimizer states
  stay fp32; forward passes run under `torch.autocast`) and in fp32 on the CPU; "fp32" never uses
  bf16; "bf16" asks for it and is refused on a machine without a GPU rather than silently dropped.

Loops keep their tensors on the host and move each batch to the model's device (`to_device`)
just before the forward pass, so generation, training and scoring all follow wherever the stage
placed the model (`DevicePolicy.place`). On a CPU every call here is a no-op: the tiny and small
profiles give the same metrics as before the policy existed (tests/golden/).

    >>> policy = DevicePolicy.resolve("auto", cuda_available=False)
    >>> policy.device, policy.compute_dtype
    (device(type='cpu'), None)
    >>> DevicePolicy.resolve("auto", cuda_available=True, local_rank=3).device
    device(type='cuda', index=3)
    >>> DevicePolicy.resolve("auto", cuda_available=True, local_rank=0).compute_dtype
    torch.bfloat16
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device
    compute_dtype: torch.dtype | None  # autocast dtype of forward passes; None = the weights' (fp32)

    @classmethod
    def resolve(cls, precision: str = "auto", *, cuda_available: bool | None = None,
                local_rank: int | None = None) -> "DevicePolicy":
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
        if not cuda:
            if precision == "bf16":
                raise ValueError("model.precision is bf16 but no CUDA device is available: use auto or fp32 here")
            return cls(torch.device("cpu"), None)
        rank = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
        return cls(torch.device("cuda", rank), None if precision == "fp32" else torch.bfloat16)

    def place(self, model):
        """`model` on this policy's device (weights keep their dtype), in place; returns it."""
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        return model.to(self.device)

    def autocast(self):
        """The context forward passes run in: bf16 autocast on a GPU, nothing on the CPU."""
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on `device` (the same objects when they are there already)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
