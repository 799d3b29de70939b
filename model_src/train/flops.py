"""Model FLOPs of a training step and MFU (model FLOPs utilisation), the PaLM-paper way, per tower.

Training FLOPs ~ 6 x parameters for the matmuls of the forward and backward passes, plus 12 x
layers x hidden for the attention scores and values of each (query, key) pair attended, counted
where they run:
- the text decoder (and LM head; not the embedding table) once per real (non-pad) text token;
  attention over each sample's own causal context, sample by sample (`causal_pairs`: a packed row
  of samples of lengths L_i holds sum L_i (L_i + 1) / 2 pairs, not the row's square);
- the vision tower's patch embedding and blocks once per image patch, attention over the patches of
  the same image (bidirectional); its merger and downsampling once per merged image token (a
  `spatial_merge_size`^2 group of patches).
These are model FLOPs, the work the model needs: a kernel that skips masked blocks (flash-attention's
variable-length path) runs about that much attention, a dense-mask kernel (sdpa or eager with a
block-diagonal or padding mask) runs the row's whole square, and padding runs through every matmul;
none of that extra work is credited, so it shows as lower MFU (`attention_implementation` names the
kernel beside the figure).
MFU = achieved model FLOP/s / the device's peak, over the steady-state steps (`steady_window`: the
first quarter of the steps, at least one, is warm-up: allocator growth, kernel autotuning); the peak comes from `train.peak_tflops`, or for
known GPUs from the table below (dense bf16). CPUs have no reliable peak: MFU is then not logged,
only the achieved TFLOP/s.
"""

from __future__ import annotations

from dataclasses import dataclass

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
MERGER_MODULES = ("merger", "downsample", "post_conv_layernorm", "post_layernorm")  # run per merged token


@dataclass(frozen=True)
class TokenFlops:
    """Training FLOPs of one model per token and per patch; parameters are counted once, not per step."""

    dense_params: int  # text decoder and LM head, outside the embedding table: per text token
    num_layers: int
    hidden_size: int
    patch_params: int = 0  # vision patch embedding and blocks: per image patch
    merger_params: int = 0  # vision merger and downsampling: per merged image token
    vision_layers: int = 0
    vision_hidden: int = 0
    merge: int = 1  # patches per merged image token

    @classmethod
    def of(cls, model) -> "TokenFlops":
        text = model.config.text_config
        embedding = _numel(model.get_input_embeddings().weight)
        visual = getattr(getattr(model, "model", model), "visual", None)
        patch = merger = 0
        if visual is not None:
            for name, child in visual.named_children():
                count = sum(_numel(p) for p in child.parameters())
                if name in MERGER_MODULES:
                    merger += count
                else:
                    patch += count
        vision = model.config.vision_config
        total = sum(_numel(p) for p in model.parameters())
        return cls(total - embedding - patch - merger, text.num_hidden_layers, text.hidden_size, patch, merger,
                   vision.depth if visual is not None else 0, vision.hidden_size if visual is not None else 0,
                   vision.spatial_merge_size ** 2)

    def text(self, tokens: float, attention_pairs: float) -> float:
        """`tokens` real text tokens whose queries attend `attention_pairs` (query, key) pairs in all."""
        return 6.0 * self.dense_params * tokens + 12.0 * self.num_layers * self.hidden_size * attention_pairs

    def per_patch(self, patches_per_image: float) -> float:
        """Per image patch: the vision blocks, attention over the image's patches, its share of the merger."""
        return (6.0 * self.patch_params + 12.0 * self.vision_layers * self.vision_hidden * patches_per_image
                + 6.0 * self.merger_params / self.merge)

    def step(self, text_tokens: float, attention_pairs: float, patches: float = 0.0, images: int = 0) -> float:
        """FLOPs of a step of `text_tokens` text tokens attending `attention_pairs` pairs and `patches`
        image patches over `images` attention blocks (an image, or one temporal slice of a video)."""
        vision = self.per_patch(patches / images) * patches if images and patches else 0.0
        return self.text(text_tokens, attention_pairs) + vision


def causal_pairs(lengths) -> int:
    """(query, key) pairs of causal attention within each sample of `lengths` tokens.

    >>> causal_pairs([3, 1])  # 1 + 2 + 3, and 1
    7
    """
    return sum(int(n) * (int(n) + 1) // 2 for n in lengths)


def steady_window(num_steps: int) -> slice:
    """The steps MFU and throughput are averaged over: all but the first quarter (warm-up), and
    at least the last step.

    >>> steady_window(8), steady_window(1)
    (slice(2, None, None), slice(0, None, None))
    """
    return slice(min(max(1, num_steps // 4), num_steps - 1) if num_steps > 1 else 0, None)


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
