"""Batched generation with Glm4v (transformers `generate`), shared by RL rollouts and evaluation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from model_src.device import model_device, to_device
from model_src.model.build import MEDIA_TOKENS, stop_token_ids
from model_src.model.inputs import Example, collate


@dataclass
class Rollouts:
    """A generated batch. `sequences` is the left-padded prompt followed by the response.

    batch: the collated prompt batch (input_ids [B, P], attention_mask, pixel_values, image_grid_thw)
    sequences: [B, P + N]
    response_mask: [B, N], 1 on response tokens up to and incl. the stop token (attention)
    loss_mask: [B, N], like response_mask but 0 on tokens inserted by force answering
    texts: decoded responses (format tokens kept, control tokens dropped)
    forced: per row, whether `</think><answer>` was inserted at the thinking budget
    """

    batch: dict
    sequences: torch.Tensor
    response_mask: torch.Tensor
    texts: list[str]
    images_per_sample: list[int]
    loss_mask: torch.Tensor | None = None
    forced: list[bool] | None = None

    def __post_init__(self):
        if self.loss_mask is None:
            self.loss_mask = self.response_mask
        if self.forced is None:
            self.forced = [False] * len(self.texts)

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
                        [self.images_per_sample[r] for r in rows], self.loss_mask[index],
                        [self.forced[r] for r in rows])


def response_mask_from(responses: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """1 up to and including the first stop token of each row, 0 after it. responses: [B, N]."""
    is_stop = torch.zeros_like(responses, dtype=torch.bool)
    for stop in stop_ids:
        is_stop |= responses == stop
    # number of stop tokens strictly before position t
    stops_before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()
    return (stops_before == 0).long()


def media_token_ids(tokenizer) -> list[int]:
    return tokenizer.convert_tokens_to_ids(MEDIA_TOKENS)


def _decode(tokenizer, responses: torch.Tensor, mask: torch.Tensor) -> list[str]:
    return tokenizer.batch_decode(responses * mask + tokenizer.pad_token_id * (1 - mask), skip_special_tokens=True)


def derived_seed(*parts) -> int:
    """A 63-bit seed from any parts (a run's seed, an iteration, a prompt id), the same on every
    machine and process (Python's `hash` of a string is salted per process: not usable here).

    >>> derived_seed(7, 0, "digits-00001") == derived_seed(7, 0, "digits-00001") != derived_seed(7, 1, "digits-00001")
    True
    """
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big") >> 1


class RowSampler:
    """Sampling with one random stream per row, so that a row's tokens depend on its seed and its
    own logits only, not on which rows share its batch (how RL groups are split over processes).

    A transformers logits processor run with greedy decoding: temperature, then top-p, then each
    row's scores plus Gumbel noise from its own generator (-log of an Exponential(1) draw), whose
    argmax is a sample from softmax(scores) (the Gumbel-max trick; vLLM's sampler draws the same way)."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def subset(self, rows: list[int]) -> "RowSampler":
        """The streams of `rows` only, continuing where they are (force answering's second pass)."""
        other = RowSampler([], self.temperature, self.top_p, "cpu")
        other.generators = [self.generators[r] for r in rows]
        return other

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            from transformers import TopPLogitsWarper

            scores = TopPLogitsWarper(self.top_p)(input_ids, scores)
        noise = torch.stack([torch.empty(scores.shape[1], device=scores.device).exponential_(generator=g)
                             for g in self.generators])
        return scores - noise.clamp_min(1e-20).log()


@torch.no_grad()
def generate(model, processor, examples: list[Example], *, max_new_tokens: int, do_sample: bool,
             temperature: float = 1.0, top_p: float = 1.0, force_answer_tokens: int = 0,
             seeds: list[int] | None = None) -> Rollouts:
    """Generate a response per example. With `force_answer_tokens` > 0, a response that used the
    whole budget without closing `</think>` gets `</think><answer>` appended and may write up to
    that many more tokens (docs/recipe.md section 4: force answering); the inserted tokens are not in loss_mask.
    Sampling draws from torch's global generator, or with `seeds` (one per example) from each
    row's own stream (`RowSampler`)."""
    model.eval()
    tokenizer = processor.tokenizer
    batch = collate(processor, examples, with_targets=False, padding_side="left")
    stops = stop_token_ids(tokenizer)
    # A sampled `<|image|>` would be read as an image placeholder when the rollout is scored by
    # the policy forward (features/tokens mismatch): media markers are never generated.
    suppress = suppressed_token_ids(model, tokenizer)
    kwargs = dict(do_sample=do_sample, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                  suppress_tokens=suppress)
    sampler = None
    if do_sample and seeds is not None:
        if len(seeds) != len(examples):
            raise ValueError(f"{len(seeds)} seeds for {len(examples)} examples")
        sampler = RowSampler(seeds, temperature, top_p, model_device(model))
        kwargs.update(do_sample=False, logits_processor=[sampler])  # greedy over the noised scores
    elif do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    # computed where the model is, kept on the host: rollouts are spliced and scored there
    sequences = model.generate(**to_device(batch, model_device(model)), max_new_tokens=max_new_tokens, **kwargs).cpu()
    prompt_len = batch["input_ids"].shape[1]
    mask = response_mask_from(sequences[:, prompt_len:], stops)
    rollouts = Rollouts(batch=dict(batch), sequences=sequences, response_mask=mask,
                        texts=_decode(tokenizer, sequences[:, prompt_len:], mask),
                        images_per_sample=[len(ex.images) for ex in examples])
    if force_answer_tokens <= 0:
        return rollouts
    out_of_budget = rows_to_force(tokenizer, sequences[:, prompt_len:], mask, max_new_tokens)
    if not out_of_budget:
        return rollouts
    if sampler is not None:
        kwargs["logits_processor"] = [sampler.subset(out_of_budget)]
    return _force_answer(model, tokenizer, rollouts, out_of_budget, force_answer_tokens, stops, kwargs)


def suppressed_token_ids(model, tokenizer) -> list[int]:
    """Tokens a rollout may never sample: media markers and the model's own suppressed tokens."""
    return sorted(set(media_token_ids(tokenizer)) | set(model.generation_config.suppress_tokens or []))


def rows_to_force(tokenizer, responses, mask, max_new_tokens: int) -> list[int]:
    """Rows that used the whole budget with no stop token and no `</think>`: they get
    `</think><answer>` appended (force answering)."""
    think_close = tokenizer.convert_tokens_to_ids("</think>")
    return [i for i in range(responses.shape[0])
            if responses.shape[1] >= max_new_tokens and int(mask[i].sum()) == responses.shape[1]
            and not bool((responses[i] == think_close).any())]


def _force_answer(model, tokenizer, rollouts: Rollouts, rows: list[int], budget: int, stops, kwargs) -> Rollouts:
    prompt_len = rollouts.prompt_len
    forced = rollouts.select(rows)
    inserted = torch.tensor(tokenizer.convert_tokens_to_ids(["</think>", "<answer>"]), dtype=torch.long)
    head = torch.cat([forced.sequences, inserted.expand(len(rows), -1)], dim=1)
    ones = torch.ones(len(rows), head.shape[1] - prompt_len, dtype=torch.long)
    inputs = dict(input_ids=head, attention_mask=torch.cat([forced.batch["attention_mask"], ones], dim=1),
                  mm_token_type_ids=torch.cat([forced.batch["mm_token_type_ids"], torch.zeros_like(ones)], dim=1),
                  pixel_values=forced.batch["pixel_values"], image_grid_thw=forced.batch["image_grid_thw"])
    continued = model.generate(**to_device(inputs, model_device(model)), max_new_tokens=budget, **kwargs).cpu()
    return splice_forced(tokenizer, rollouts, rows, inserted, continued[:, head.shape[1]:], stops)


def splice_forced(tokenizer, rollouts: Rollouts, rows: list[int], inserted: torch.Tensor, tail: torch.Tensor,
                  stops: list[int]) -> Rollouts:
    """The forced rows become head (prompt, response, the `inserted` `</think><answer>`) + `tail`
    (the continuation, from transformers or vLLM); the inserted tokens get no gradient."""
    prompt_len = rollouts.prompt_len
    forced = rollouts.select(rows)
    head = torch.cat([forced.sequences, inserted.expand(len(rows), -1)], dim=1)
    tail_mask = response_mask_from(tail, stops)
    width = rollouts.sequences.shape[1] + inserted.numel() + tail.shape[1]
    sequences = torch.full((len(rollouts.texts), width), tokenizer.pad_token_id, dtype=torch.long)
    sequences[:, :rollouts.sequences.shape[1]] = rollouts.sequences
    response_mask = torch.zeros(len(rollouts.texts), width - prompt_len, dtype=torch.long)
    response_mask[:, :rollouts.response_mask.shape[1]] = rollouts.response_mask
    loss_mask = response_mask.clone()
    for k, row in enumerate(rows):
        sequences[row, head.shape[1]:] = tail[k]
        sequences[row, :head.shape[1]] = head[k]
        response_mask[row] = torch.cat([torch.ones(head.shape[1] - prompt_len, dtype=torch.long), tail_mask[k]])
        loss_mask[row] = response_mask[row]
        n = rollouts.sequences.shape[1] - prompt_len
        loss_mask[row, n:n + inserted.numel()] = 0  # inserted, not sampled: no gradient through them
    texts = _decode(tokenizer, sequences[:, prompt_len:], response_mask)
    return Rollouts(rollouts.batch, sequences, response_mask, texts, rollouts.images_per_sample, loss_mask,
                    [i in rows for i in range(len(texts))])
