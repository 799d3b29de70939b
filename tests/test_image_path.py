"""The image reaches the model on every stage's path: pretraining's packed batches, SFT's padded
batches, and the prompts RL rollouts and evaluation decode from (the same engine). For each, the
model's outputs for a row differ from those for the same row with a blank image of the same size,
so a change that silently drops or blanks images fails here, without training anything. The row's
image is a curated one: curation's conversions (here a CMYK JPEG) feed the same path."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from model_src.config import load_config
from model_src.data.curation.checks import check_row
from model_src.data.generate import GeneratorConfig, domain_rows
from model_src.model.build import build_model, build_processor, train_tokenizer
from model_src.model.inputs import collate, pretrain_example, prompt_example, sft_example
from model_src.rl.loop import response_logprobs
from model_src.rl.rollout import TransformersEngine
from model_src.train.packing import collate_packed, encode


@pytest.fixture(scope="module")
def setup():
    cfg = load_config("tiny")
    row = domain_rows(GeneratorConfig(), "digits", "train", 1)[0]
    image = Image.open(io.BytesIO(row["images"][0])).convert("RGB")
    cmyk = io.BytesIO()
    image.convert("CMYK").save(cmyk, format="JPEG", quality=95)
    problem, _, kept = check_row({**row, "images": [cmyk.getvalue()]})  # curation converts it to an RGB PNG
    assert problem is None
    blank = io.BytesIO()
    Image.new("RGB", image.size, (255, 255, 255)).save(blank, format="PNG")
    tokenizer = train_tokenizer([row["caption"], row["question"], row["reasoning"]], 300)
    processor = build_processor(tokenizer, cfg.model)
    model = build_model(cfg.model, tokenizer, seed=0).eval()
    return model, processor, {**row, "images": kept}, {**row, "images": [blank.getvalue()]}


def _differ(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a.float() - b.float()).abs().max())


@torch.no_grad()
def test_pretraining_packed_batches_carry_the_image(setup):
    model, processor, row, blank = setup
    logits = []
    for r in (row, blank):
        sample = encode(model, processor, pretrain_example(r))
        batch = collate_packed([[sample]], sample.length + 8, processor.tokenizer.pad_token_id)
        batch.pop("num_real_tokens")
        assert batch["pixel_values"] is not None and int(batch["mm_token_type_ids"].sum()) > 0
        logits.append(model(**batch).logits)
    assert _differ(*logits) > 1e-4


@torch.no_grad()
def test_sft_batches_carry_the_image(setup):
    model, processor, row, blank = setup
    logits = [model(**collate(processor, [sft_example(processor, r)], with_targets=True)).logits for r in (row, blank)]
    assert _differ(*logits) > 1e-4


@torch.no_grad()
def test_rollout_and_evaluation_prompts_carry_the_image(setup):
    """RLCS rolls out, and evaluation decodes, through the engine from `prompt_example`: the
    response's log-probabilities under the policy depend on the image."""
    model, processor, row, blank = setup
    engine = TransformersEngine(model, processor)
    rollouts = [engine.generate([prompt_example(processor, r)], max_new_tokens=4, do_sample=False) for r in (row, blank)]
    assert all(ro.batch["pixel_values"] is not None for ro in rollouts)
    # the same tokens scored with each image: a model that ignored images would give equal numbers
    same_tokens = rollouts[0]
    swapped = type(same_tokens)(**{**same_tokens.__dict__, "batch": rollouts[1].batch})
    assert _differ(response_logprobs(model, same_tokens), response_logprobs(model, swapped)) > 1e-5
