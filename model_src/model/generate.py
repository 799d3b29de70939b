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

    @property
    def prompt_len(self) -> int:
        return self.batch["input_ids"].shape[1]


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
    return Rollouts(batch=dict(batch), sequences=sequences, response_mask=mask, texts=texts)
