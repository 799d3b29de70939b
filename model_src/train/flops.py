"""Model FLOPs per token and MFU (model FLOPs utilisation), the PaLM-paper way.

Training FLOPs per token ~ 6 x (parameters outside the embedding tables) for the matmuls of the
forward and backward passes, plus 12 x layers x hidden x context for attention scores and values.
MFU = achieved model FLOP/s / the device's peak; the peak comes from `train.peak_tflops`, or for
known GPUs from the table below (dense bf16). CPUs have no reliable peak: MFU is then not logged,
only the achieved TFLOP/s.
"""

from __future__ import annotations

from dataclasses import dataclass

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


@dataclass(frozen=True)
class TokenFlops:
    """Training FLOPs per token of one model; the parameter count is taken once, not per step."""

    dense_params: int  # parameters outside the embedding table
    num_layers: int
    hidden_size: int

    @classmethod
    def of(cls, model) -> "TokenFlops":
        text = model.config.text_config
        embedding = _numel(model.get_input_embeddings().weight)
        return cls(sum(_numel(p) for p in model.parameters()) - embedding, text.num_hidden_layers, text.hidden_size)

    def __call__(self, context: float) -> float:
        """At an average attention context of `context` tokens."""
        return 6.0 * self.dense_params + 12.0 * self.num_layers * self.hidden_size * context


def device_peak_tflops(configured: float = 0.0, device=None) -> float:
    """`configured` when set, else the table's value for the GPU the model is on, else 0 (unknown)."""
    if configured > 0:
        return configured
    import torch

    if device is not None and torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(torch.device(device))
        for key, tflops in PEAK_BF16_TFLOPS.items():
            if key in name:
                return tflops
    return 0.0


def _numel(param) -> int:
    """Elements of a parameter, also when ZeRO-3 has partitioned it (its local tensor is empty)."""
    return getattr(param, "ds_numel", param.numel())
