"""Attention over packed rows that costs what the samples cost, not what the row costs.

A packed row holds several samples; transformers builds a block-diagonal mask from the restarting
text positions and SDPA then computes the whole row x row score matrix, most of it masked. Flash
attention's varlen kernels skip the masked blocks on GPUs; on CPU (and wherever flash attention is
absent) this function does the same in PyTorch: causal SDPA per sample segment (a segment starts
where the text position is 0). Anything that is not a packed training row (padded batches,
generation with a KV cache) goes to transformers' SDPA unchanged, so results are identical either
way (tests/test_packing.py compares losses and gradients).

    with packed_attention(model):   # while training on packed rows
        ...
"""

from __future__ import annotations

from contextlib import contextmanager

NAME = "thinkpipe_packed_sdpa"


def packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                position_ids=None, **kwargs):
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    length = query.shape[2]
    packed = (position_ids is not None and key.shape[2] == length and position_ids.shape[-1] == length
              and bool((position_ids[:, 1:] == 0).any()))
    if not packed:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    out = torch.empty_like(query)
    gqa = query.shape[1] != key.shape[1]
    for b in range(query.shape[0]):
        starts = (position_ids[b] == 0).nonzero().flatten().tolist() + [length]
        for start, end in zip(starts, starts[1:]):
            out[b:b + 1, :, start:end] = F.scaled_dot_product_attention(
                query[b:b + 1, :, start:end], key[b:b + 1, :, start:end], value[b:b + 1, :, start:end],
                dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, packed_sdpa)
        AttentionMaskInterface.register(NAME, sdpa_mask)  # padded batches still get SDPA's mask


@contextmanager
def packed_attention(model):
    """The text model attends per sample while inside; its own implementation is restored after
    (the saved config never names this function). Models already on flash attention keep it."""
    text_config = model.config.text_config
    before = text_config._attn_implementation
    if before not in ("sdpa", "eager"):
        yield
        return
    _register()
    model.set_attn_implementation({"text_config": NAME})
    try:
        yield
    finally:
        model.set_attn_implementation({"text_config": before})
