"""A tiny Glm4v learns: loss falls, every parameter changes, labels cover the assistant turn only."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from model_src.config import TrainConfig, load_config
from model_src.data.generate import GeneratorConfig, generate_corpus
from model_src.data.schema import format_response
from model_src.model.build import build_model, build_processor, train_tokenizer
from model_src.model.inputs import IGNORE_INDEX, collate, pretrain_example, sft_example


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    generate_corpus(folder, GeneratorConfig(rows={"stem": 16, "digits": 24}))
    rows = pq.read_table(folder / "stem-train.parquet").to_pylist() + \
        pq.read_table(folder / "digits-train.parquet").to_pylist()
    cfg = load_config("tiny")
    tokenizer = train_tokenizer([t for r in rows for t in (r["caption"], r["question"], r["reasoning"])], 400)
    processor = build_processor(tokenizer, cfg.model)
    return cfg, rows, processor


def test_sft_labels_cover_exactly_the_assistant_response(setup):
    cfg, rows, processor = setup
    example = sft_example(processor, rows[0])
    batch = collate(processor, [example, sft_example(processor, rows[20])], with_targets=True)
    tokenizer = processor.tokenizer
    for i in range(2):
        kept = batch["labels"][i][batch["labels"][i] != IGNORE_INDEX]
        expected = format_response(rows[[0, 20][i]]["reasoning"], rows[[0, 20][i]]["answer"]) + "<|endoftext|>"
        assert tokenizer.decode(kept) == expected
        assert (batch["labels"][i][batch["attention_mask"][i] == 0] == IGNORE_INDEX).all()
    image_id = tokenizer.convert_tokens_to_ids("<|image|>")
    assert not (batch["labels"] == image_id).any()


def test_pretrain_labels_cover_the_caption(setup):
    _, rows, processor = setup
    batch = collate(processor, [pretrain_example(rows[0])], with_targets=True)
    kept = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    assert processor.tokenizer.decode(kept) == rows[0]["caption"] + "<|endoftext|>"


def test_training_lowers_loss_and_changes_every_parameter(setup):
    from model_src.train.supervised import train_supervised

    cfg, rows, processor = setup
    model = build_model(cfg.model, processor.tokenizer, seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    examples = [sft_example(processor, r) for r in rows[:16]]
    logged = []
    summary = train_supervised(model, processor, examples, TrainConfig(num_steps=40, batch_size=4, lr=3e-3,
                                                                        warmup_steps=4, log_every=10),
                               seed=0, log=lambda m, s: logged.append(m["loss"]))
    assert len(logged) == 40
    assert summary["final_loss"] < summary["first_loss"] * 0.7
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert not unchanged, unchanged


def test_rollout_select_keeps_each_samples_own_pixels(setup):
    from model_src.model.generate import generate
    from model_src.model.inputs import prompt_example

    cfg, rows, processor = setup
    model = build_model(cfg.model, processor.tokenizer, seed=0)
    # stem images are 112x56 and digit-recognition images 56x56: different patch counts per sample
    picked = [rows[0], rows[20], rows[1], rows[21]]
    examples = [prompt_example(processor, r) for r in picked]
    rollouts = generate(model, processor, examples, max_new_tokens=3, do_sample=False)
    subset = rollouts.select([1, 2])
    alone = collate(processor, [examples[1], examples[2]], with_targets=False, padding_side="left")
    assert torch.equal(subset.batch["pixel_values"], alone["pixel_values"])
    assert torch.equal(subset.batch["image_grid_thw"], alone["image_grid_thw"])
    assert subset.texts == [rollouts.texts[1], rollouts.texts[2]]
    assert torch.equal(subset.sequences, rollouts.sequences[[1, 2]])


def test_force_answering_closes_thinking_at_the_budget(setup):
    from model_src.model.generate import generate
    from model_src.model.inputs import prompt_example

    cfg, rows, processor = setup
    model = build_model(cfg.model, processor.tokenizer, seed=0)
    model.generation_config.suppress_tokens = [processor.tokenizer.convert_tokens_to_ids(t)
                                               for t in ("</think>", "<|endoftext|>", "<|user|>")]
    examples = [prompt_example(processor, r) for r in rows[:3]]
    plain = generate(model, processor, examples, max_new_tokens=6, do_sample=False)
    forced = generate(model, processor, examples, max_new_tokens=6, do_sample=False, force_answer_tokens=4)
    assert plain.forced == [False] * 3 and forced.forced == [True] * 3
    for text, original in zip(forced.texts, plain.texts):
        assert text.startswith(original) and "</think><answer>" in text
    n = plain.response_mask.shape[1]
    # the two inserted tokens are attended to but carry no policy gradient
    assert (forced.response_mask[:, n:n + 2] == 1).all() and (forced.loss_mask[:, n:n + 2] == 0).all()
    assert (forced.loss_mask[:, :n] == plain.response_mask).all()


def test_rollouts_never_contain_media_placeholders(setup):
    """A sampled `<|image|>` would break the policy forward (image tokens vs features)."""
    from model_src.model.build import MEDIA_TOKENS
    from model_src.model.generate import generate
    from model_src.model.inputs import prompt_example
    from model_src.rl.loop import response_logprobs

    cfg, rows, processor = setup
    model = build_model(cfg.model, processor.tokenizer, seed=0)
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image|>")


    def favour_image_token(module, inputs, logits):  # the placeholder becomes by far the likeliest token
        logits[..., image_id] += 1e4
        return logits

    model.lm_head.register_forward_hook(favour_image_token)
    examples = [prompt_example(processor, r) for r in rows[:2]]
    out = generate(model, processor, examples, max_new_tokens=5, do_sample=True)
    media = processor.tokenizer.convert_tokens_to_ids(MEDIA_TOKENS)
    assert not any(int(t) in media for t in out.sequences[:, out.prompt_len:].flatten())
    assert response_logprobs(model, out).shape == out.response_mask.shape


def test_sft_rows_with_broken_targets_are_rejected_with_a_count_per_reason(setup):
    from model_src.data.sft_filter import filter_sft_rows

    _, rows, _ = setup
    broken = [
        {**rows[0], "reasoning": "first <think> nested thoughts"},
        {**rows[1], "reasoning": "done.</think><answer>early"},
        {**rows[2], "answer": "<|begin_of_box|>7<|end_of_box|>"},
        {**rows[3], "reasoning": "I add the two numbers again. " * 40},
    ]
    kept, rejected = filter_sft_rows(rows + broken)
    assert rejected == {"malformed_tags": 2, "several_boxes": 1, "repeated_blocks": 1}
    assert kept == rows  # every generated row is clean and keeps its order
