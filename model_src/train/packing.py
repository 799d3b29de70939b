"""Sample packing: variable-length multimodal samples packed into fixed-length rows.

Each row holds several whole samples back to back, padded only at its tail. No token attends
across a sample boundary and positions restart per sample, including Glm4v's 3D (M-RoPE)
positions of image tokens: every sample's positions are computed on its own
(`model.model.get_rope_index`), and the row gets `position_ids` of shape [4, batch, length]
whose first plane is the text position restarting at 0 for each sample. transformers' Glm4v reads
that plane to build a block-diagonal causal mask (no 2D attention mask is passed) and the other
three planes for M-RoPE. Labels at a sample's first token are always masked (prompts are never
trained on), so the shifted loss never crosses a boundary either.

The packing plan is computed up front from sample lengths and the seed (first fit over a short
look-ahead window of the sampling stream), so a resumed run rebuilds the same plan and the step
number is the data position.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from model_src.model.inputs import IGNORE_INDEX, Example, collate

if TYPE_CHECKING:  # torch is imported where tensors are built, not at import time
    import torch


@dataclass
class EncodedSample:
    """One sample, tokenised alone. Tensors without a batch dimension."""

    input_ids: "torch.Tensor"          # [length]
    labels: "torch.Tensor"             # [length]
    mm_token_type_ids: "torch.Tensor"  # [length]
    positions: "torch.Tensor"          # [3, length] M-RoPE (temporal, height, width)
    pixel_values: "torch.Tensor | None"
    image_grid_thw: "torch.Tensor | None"

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


def encode(model, processor, example: Example) -> EncodedSample:
    batch = collate(processor, [example], with_targets=True)
    positions, _ = model.model.get_rope_index(
        batch["input_ids"], batch["mm_token_type_ids"], image_grid_thw=batch.get("image_grid_thw"),
        attention_mask=batch["attention_mask"])
    return EncodedSample(batch["input_ids"][0], batch["labels"][0], batch["mm_token_type_ids"][0], positions[:, 0],
                         batch.get("pixel_values"), batch.get("image_grid_thw"))


class EncodedCache:
    """Encoded samples by example index, up to `max_bytes` of tensors: an example drawn again in a
    later epoch is not re-tokenised (packing tokenises one sample at a time, so this is most of
    its preprocessing). Beyond the budget samples are encoded on every use."""

    def __init__(self, model, processor, examples: list[Example], max_bytes: int = 1 << 30):
        self.model, self.processor, self.examples = model, processor, examples
        self.max_bytes, self.used = max_bytes, 0
        self.items: dict[int, EncodedSample] = {}

    def __getitem__(self, index: int) -> EncodedSample:
        sample = self.items.get(index)
        if sample is None:
            import torch

            with torch.no_grad():
                sample = encode(self.model, self.processor, self.examples[index])
            size = sum(t.numel() * t.element_size() for t in (sample.input_ids, sample.labels, sample.positions,
                                                             sample.pixel_values) if t is not None)
            if self.used + size <= self.max_bytes:
                self.items[index] = sample
                self.used += size
        return sample


def plan_steps(lengths: list[int], stream: Iterator[int], num_steps: int | None, rows_per_step: int, pack_length: int,
               row_ids: list[str] | None = None, lookahead: int = 32) -> list[list[list[int]]]:
    """For every step, `rows_per_step` rows, each a list of example indices whose lengths sum to at
    most `pack_length`. Examples come from `stream` in order, except that each row is filled first
    fit from a window of the next `lookahead` examples (so short samples plug the gaps). With
    `num_steps` None the plan ends with the stream, every example of it placed once.

    >>> plan_steps([5, 3, 4, 2, 6], iter([0, 1, 2, 3, 4] * 3), num_steps=2, rows_per_step=1, pack_length=8,
    ...            lookahead=4)
    [[[0, 1]], [[2, 3]]]
    >>> plan_steps([5, 3, 4, 2, 6], iter([0, 1, 2, 3, 4]), num_steps=None, rows_per_step=2, pack_length=8)
    [[[0, 1], [2, 3]], [[4]]]
    """
    too_long = [i for i, n in enumerate(lengths) if n > pack_length]
    if too_long:
        i = too_long[0]
        name = row_ids[i] if row_ids else f"example {i}"
        raise ValueError(f"{name} has {lengths[i]} tokens, more than pack_length {pack_length} "
                         f"({len(too_long)} such examples): raise train.pack_length")
    window: list[int] = []
    plan = []
    exhausted = False
    while num_steps is None or len(plan) < num_steps:
        rows = []
        for _ in range(rows_per_step):
            while len(window) < lookahead and not exhausted:
                try:
                    window.append(next(stream))
                except StopIteration:
                    if num_steps is not None:
                        raise
                    exhausted = True
            row, free = [], pack_length
            for i in list(window):
                if lengths[i] <= free:
                    row.append(i)
                    free -= lengths[i]
                    window.remove(i)
                    if free == 0:
                        break
            if row:
                rows.append(row)
        if not rows:
            break
        plan.append(rows)
    return plan


def collate_packed(samples: list[list[EncodedSample]], pack_length: int, pad_token_id: int) -> dict:
    """Rows of samples -> model inputs: input_ids/labels/mm_token_type_ids [rows, pack_length],
    position_ids [4, rows, pack_length], pixel_values and image_grid_thw in token order, and no
    attention mask (the packed positions define it). Adds `num_real_tokens`."""
    import torch

    ids, labels, types, positions, pixels, grids = [], [], [], [], [], []
    real = 0
    for row in samples:
        used = sum(s.length for s in row)
        if used > pack_length:
            raise ValueError(f"row of {used} tokens exceeds pack_length {pack_length}")
        pad = pack_length - used
        real += used
        ids.append(torch.cat([s.input_ids for s in row] + [torch.full((pad,), pad_token_id, dtype=torch.long)]))
        labels.append(torch.cat([s.labels for s in row] + [torch.full((pad,), IGNORE_INDEX, dtype=torch.long)]))
        types.append(torch.cat([s.mm_token_type_ids for s in row]
                               + [torch.zeros(pad, dtype=row[0].mm_token_type_ids.dtype if row else torch.long)]))
        # plane 0: text positions restarting per sample (and for the padding tail, its own block)
        text = torch.cat([torch.arange(s.length) for s in row] + [torch.arange(pad)])
        rope = torch.cat([s.positions for s in row] + [torch.arange(pad).expand(3, pad)], dim=1)
        positions.append(torch.cat([text[None], rope], dim=0))
        pixels += [s.pixel_values for s in row if s.pixel_values is not None]
        grids += [s.image_grid_thw for s in row if s.image_grid_thw is not None]
    batch = {
        "input_ids": torch.stack(ids), "labels": torch.stack(labels), "mm_token_type_ids": torch.stack(types),
        "position_ids": torch.stack(positions, dim=1), "attention_mask": None, "use_cache": False,
        "num_real_tokens": real,
    }
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)
        batch["image_grid_thw"] = torch.cat(grids)
    return batch
