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
    # split/cat, not slice-assignment: the backward of a slice writes into a zeroed copy of the
    # whole row for every segment, which cost more than the attention itself here
    gqa = query.shape[1] != key.shape[1]
    rows = []
    for b in range(query.shape[0]):
        # a segment starts where the text position is 0 (and at the row's start, whatever it holds)
        edges = sorted({0, length, *(position_ids[b] == 0).nonzero().flatten().tolist()})
        sizes = [end - start for start, end in zip(edges, edges[1:])]
        segments = zip(query[b:b + 1].split(sizes, dim=2), key[b:b + 1].split(sizes, dim=2),
                       value[b:b + 1].split(sizes, dim=2))
        rows.append(torch.cat([F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True,
                                                              scale=scaling, enable_gqa=gqa)
                               for q, k, v in segments], dim=2))
    out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def packed_mask(*args, attention_mask=None, allow_is_causal_skip: bool = True, **kwargs):
    """SDPA's mask, except for packed rows: there transformers would build the full row x row
    block-diagonal mask (most of a packed step's overhead on CPU) that `packed_sdpa` never reads.
    A row without a padding mask whose causal shortcut was switched off is a packed row (the only
    other causes, extra mask functions or a compiled cache, are absent in training)."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and not allow_is_causal_skip:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, allow_is_causal_skip=allow_is_causal_skip, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, packed_sdpa)
        AttentionMaskInterface.register(NAME, packed_mask)  # padded batches still get SDPA's mask


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
