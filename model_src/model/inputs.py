"""Rows -> model inputs: prompts, targets, batches and label masks, shared by every stage.

Pretraining learns to caption: `<|begin_of_image|><|image|><|end_of_image|>{caption}<|endoftext|>`,
with loss on the caption. SFT, RL and evaluation use the chat template:
`[gMASK]<sop><|user|>\n<image>{question}<|assistant|>\n{response}<|endoftext|>`; SFT's loss covers the
assistant tokens only (everything after `<|assistant|>\n`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from model_src.data.schema import format_response, reward_domain, row_verifier
from model_src.model.build import ASSISTANT_TOKEN, END_OF_IMAGE_TOKEN, EOS_TOKEN

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    """One training/eval sample: decoded images, the prompt text and the target text."""

    row_id: str
    domain: str  # the reward's domain (`choice` for multiple-choice rows): what metrics are grouped by
    images: tuple[Image.Image, ...]
    prompt: str
    target: str
    reference: str
    verifier: str = ""  # what scores it (schema.row_verifier); "" = the domain's own


def decode_images(row: dict) -> tuple[Image.Image, ...]:
    return tuple(Image.open(io.BytesIO(data)).convert("RGB") for data in row["images"])


def chat_prompt(processor, row: dict) -> str:
    content = [{"type": "image"} for _ in row["images"]] + [{"type": "text", "text": row["question"]}]
    return processor.apply_chat_template([{"role": "user", "content": content}],
                                         add_generation_prompt=True, tokenize=False)


def pretrain_example(row: dict) -> Example:
    prompt = "<|begin_of_image|><|image|><|end_of_image|>" * len(row["images"])
    return Example(row["id"], row["domain"], decode_images(row), prompt, row["caption"] + EOS_TOKEN, row["answer"])


def sft_example(processor, row: dict) -> Example:
    target = format_response(row["reasoning"], row["answer"]) + EOS_TOKEN
    return Example(row["id"], row["domain"], decode_images(row), chat_prompt(processor, row), target, row["answer"])


def prompt_example(processor, row: dict) -> Example:
    """A prompt to generate from (RL, evaluation): no target."""
    return Example(row["id"], reward_domain(row), decode_images(row), chat_prompt(processor, row), "", row["answer"],
                   row_verifier(row))


def collate(processor, examples: list[Example], *, with_targets: bool, padding_side: str = "right"):
    """Tokenise a batch (images expanded to their patch tokens); with targets, add `labels` that
    are IGNORE_INDEX everywhere except the target tokens."""
    tokenizer = processor.tokenizer
    tokenizer.padding_side = padding_side
    texts = [ex.prompt + (ex.target if with_targets else "") for ex in examples]
    images = [image for ex in examples for image in ex.images]
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    if with_targets:
        batch["labels"] = target_labels(batch["input_ids"], batch["attention_mask"], tokenizer)
    return batch


def target_labels(input_ids, attention_mask, tokenizer):
    """Labels: keep tokens after the last `<|assistant|>\\n` (chat) or the last `<|end_of_image|>`
    (captioning); mask the prompt, image tokens and padding.

    input_ids, attention_mask: LongTensor [batch, seq]. Returns LongTensor [batch, seq].
    """
    import torch

    assistant_id = tokenizer.convert_tokens_to_ids(ASSISTANT_TOKEN)
    end_image_id = tokenizer.convert_tokens_to_ids(END_OF_IMAGE_TOKEN)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for i in range(input_ids.shape[0]):
        ids = input_ids[i].tolist()
        if assistant_id in ids:
            start = len(ids) - 1 - ids[::-1].index(assistant_id) + 2  # skip `<|assistant|>` and "\n"
        elif end_image_id in ids:
            start = len(ids) - 1 - ids[::-1].index(end_image_id) + 1
        else:
            raise ValueError(f"sample {i}: no <|assistant|> or <|end_of_image|> token to anchor the target")
        labels[i, start:] = input_ids[i, start:]
    labels[attention_mask == 0] = IGNORE_INDEX
    return labels
