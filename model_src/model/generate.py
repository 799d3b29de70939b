"""Batched generation with Glm4v (transformers `generate`), shared by RL rollouts and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model_src.model.build import stop_token_ids
from model_src.model.inputs import Example, collate


@dataclass
class Rollouts:
    """A generated batch. `sequences` is the left-padded prompt followed by the response.

    batch: the collated prompt batch (input_ids [B, P], attention_mask, pixel_values, image_grid_thw)
    sequences: [B, P + N]; response_mask: [B, N], 1 on response tokens up to and incl. the stop token
    texts: decoded responses (format tokens kept, control tokens dropped)
    """

    batch: dict
    sequences: torch.Tensor
    response_mask: torch.Tensor
    texts: list[str]
    images_per_sample: list[int]

    @property
    def prompt_len(self) -> int:
        return self.batch["input_ids"].shape[1]

    def select(self, rows: list[int]) -> "Rollouts":
        """The rollouts of `rows` only (pixel rows follow each sample's images)."""
        grid = self.batch["image_grid_thw"]
        patches = grid.prod(dim=1).tolist()  # pixel rows per image
        image_start = [0]
        for count in self.images_per_sample:
            image_start.append(image_start[-1] + count)
        pixel_start = [0]
        for n in patches:
            pixel_start.append(pixel_start[-1] + n)
        images = [img for r in rows for img in range(image_start[r], image_start[r + 1])]
        pixel_rows = [p for img in images for p in range(pixel_start[img], pixel_start[img + 1])]
        index = torch.tensor(rows, dtype=torch.long)
        batch = {k: v[index] for k, v in self.batch.items() if k not in ("pixel_values", "image_grid_thw")}
        batch["pixel_values"] = self.batch["pixel_values"][torch.tensor(pixel_rows, dtype=torch.long)]
        batch["image_grid_thw"] = grid[torch.tensor(images, dtype=torch.long)]
        return Rollouts(batch, self.sequences[index], self.response_mask[index], [self.texts[r] for r in rows],
                        [self.images_per_sample[r] for r in rows])


def response_mask_from(responses: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """1 up to and including the first stop token of each row, 0 after it. responses: [B, N]."""
    is_stop = torch.zeros_like(responses, dtype=torch.bool)
    for stop in stop_ids:
        is_stop |= responses == stop
    # number of stop tokens strictly before position t
    stops_before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()
    return (stops_before == 0).long()


@torch.no_grad()
def generate(model, processor, examples: list[Example], *, max_new_tokens: int, do_sample: bool,
             temperature: float = 1.0, top_p: float = 1.0) -> Rollouts:
    model.eval()
    batch = collate(processor, examples, with_targets=False, padding_side="left")
    stops = stop_token_ids(processor.tokenizer)
    kwargs = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, eos_token_id=stops,
                  pad_token_id=processor.tokenizer.pad_token_id)
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    sequences = model.generate(**batch, **kwargs)
    responses = sequences[:, batch["input_ids"].shape[1]:]
    mask = response_mask_from(responses, stops)
    texts = processor.tokenizer.batch_decode(responses * mask + processor.tokenizer.pad_token_id * (1 - mask),
                                             skip_special_tokens=True)
    return Rollouts(batch=dict(batch), sequences=sequences, response_mask=mask, texts=texts,
                    images_per_sample=[len(ex.images) for ex in examples])
