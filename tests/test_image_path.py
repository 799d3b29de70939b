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


# GLM-4.1V-9B-Thinking's released preprocessor_config.json bounds, in transformers' units (a still
# image counts as two frames); the glm4v-9b profile states them as pixels of one image.
RELEASED_SIZE = {"shortest_edge": 12544, "longest_edge": 9633792}


def _grid(processor, image: Image.Image) -> list[int]:
    """[frames, rows, columns] of 14-px patches an image processor (or a processor's) gives `image`."""
    image_processor = getattr(processor, "image_processor", processor)
    return image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()


def test_every_domains_images_reach_the_vision_tower_at_their_own_size():
    """`model.max_pixels` is pixels of one image: in `small`, every generated image's grid is its own
    size in 14-px patches (transformers counts a still image as two frames, which once halved it)."""
    from model_src.data.domains import DOMAINS

    cfg = load_config("small")
    processor = build_processor(train_tokenizer(["a b c"], 300), cfg.model)
    sizes = set()
    for domain in DOMAINS:
        for row in domain_rows(GeneratorConfig(), domain, "train", 12):
            for data in row["images"]:
                image = Image.open(io.BytesIO(data)).convert("RGB")
                width, height = image.size
                sizes.add(image.size)
                assert _grid(processor, image) == [1, height // 14, width // 14], (domain, image.size)
    assert {(224, 84), (168, 112), (112, 112), (224, 56)} <= sizes  # the largest ones were among them
    too_big = Image.new("RGB", (448, 224))  # 100,352 px over small's 25,088: shrunk to fit, aspect kept
    assert _grid(processor, too_big) == [1, 8, 16]


def test_the_9b_profile_sees_images_as_the_released_processor_does():
    from transformers import Glm4vImageProcessor

    cfg = load_config("glm4v-9b")
    ours = build_processor(train_tokenizer(["a b c"], 300), cfg.model)
    assert dict(ours.image_processor.size) == RELEASED_SIZE
    released = Glm4vImageProcessor(size=RELEASED_SIZE, patch_size=14, temporal_patch_size=2, merge_size=2)
    for size in [(56, 56), (60, 30), (640, 480), (1920, 1080), (3000, 2000), (4000, 200)]:
        image = Image.new("RGB", size)
        assert _grid(ours, image) == _grid(released, image), size
    # 3000 x 2000 is over the released 4.8 M pixels of one image: shrunk, to within it
    _, h, w = _grid(ours, Image.new("RGB", (3000, 2000)))
    assert (h * 14) * (w * 14) <= cfg.model.max_pixels < 3000 * 2000


def test_a_released_processor_takes_the_profiles_bounds():
    """With `model.init_from`, the profile's bounds win over the loaded preprocessor_config.json."""
    import dataclasses

    from model_src.model.build import apply_pixel_bounds

    cfg = load_config("small")
    processor = build_processor(train_tokenizer(["a b c"], 300), cfg.model)
    assert apply_pixel_bounds(processor, cfg.model) == []  # built from the profile: nothing to change
    narrower = dataclasses.replace(cfg.model, max_pixels=112 * 56)
    changes = apply_pixel_bounds(processor, narrower)
    assert changes and changes[0].startswith("image_processor.size")
    assert _grid(processor, Image.new("RGB", (112, 112))) == [1, 4, 4]  # 6,272 px of one image now
