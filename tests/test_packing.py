"""Packing is exact: a packed batch gives the same loss and gradients as its samples run one by
one (fp32, tolerance rel 1e-5 on the loss and 1e-4 / abs 1e-6 on every gradient), and the plan
fills the rows."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from model_src.config import load_config
from model_src.data.generate import GeneratorConfig, generate_corpus
from model_src.model.build import build_model, build_processor, train_tokenizer
from model_src.model.inputs import collate, pretrain_example, sft_example
from model_src.train.packing import EncodedCache, collate_packed, encode, plan_steps


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    generate_corpus(folder, GeneratorConfig(rows={"stem": 8, "chart": 4, "video": 4, "grounding": 4, "digits": 6}))
    rows = [r for f in sorted(folder.glob("*-train.parquet")) for r in pq.read_table(f).to_pylist()]
    cfg = load_config("tiny")
    tokenizer = train_tokenizer([t for r in rows for t in (r["caption"], r["question"], r["reasoning"])], 400)
    processor = build_processor(tokenizer, cfg.model)
    model = build_model(cfg.model, tokenizer, seed=3)
    return rows, processor, model


def _pick(rows, domains):
    return [next(r for r in rows if r["domain"] == d) for d in domains]


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind, attention", [("sft", "sdpa"), ("pretrain", "sdpa"), ("sft", "per-sample"),
                                             ("pretrain", "per-sample")])
def test_packed_loss_and_gradients_equal_one_by_one(setup, kind, attention):
    """Both attentions the trainer can use on packed rows: SDPA with transformers' block-diagonal
    mask, and packed_attention's per-sample SDPA (what packed training uses)."""
    rows, processor, model = setup
    if attention == "per-sample":
        from model_src.train.packed_attention import NAME, packed_attention

        with packed_attention(model):
            assert model.config.text_config._attn_implementation == NAME
            _check_packed_equals_one_by_one(rows, processor, model, kind)
        assert model.config.text_config._attn_implementation == "sdpa"  # restored
    else:
        _check_packed_equals_one_by_one(rows, processor, model, kind)


def _check_packed_equals_one_by_one(rows, processor, model, kind):
    picked = _pick(rows, ["stem", "video", "chart", "grounding", "digits", "stem"])
    examples = [sft_example(processor, r) if kind == "sft" else pretrain_example(r) for r in picked]
    encoded = [encode(model, processor, ex) for ex in examples]
    video = encoded[1]
    assert not torch.equal(video.positions[1], torch.arange(video.length))  # M-RoPE positions are in play
    bins = [encoded[:3], encoded[3:]]
    pack_length = max(sum(s.length for s in b) for b in bins) + 7  # every row ends in padding

    # reference: each sample alone, weighted by its share of the target tokens
    counts = [int((s.labels[1:] != -100).sum()) for s in encoded]
    total = sum(counts)
    model.zero_grad(set_to_none=True)
    reference = 0.0
    for example, n in zip(examples, counts):
        loss = model(**collate(processor, [example], with_targets=True)).loss
        (loss * n / total).backward()
        reference += loss.item() * n / total
    expected = _grads(model)

    model.zero_grad(set_to_none=True)
    batch = collate_packed(bins, pack_length, processor.tokenizer.pad_token_id)
    assert batch.pop("num_real_tokens") == sum(s.length for s in encoded)
    packed = model(**batch).loss
    packed.backward()
    assert packed.item() == pytest.approx(reference, rel=1e-5)
    got = _grads(model)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)

    # control: without position restarts the samples see each other and the loss changes
    leaky = collate_packed(bins, pack_length, processor.tokenizer.pad_token_id)
    leaky.pop("num_real_tokens")
    leaky["position_ids"][0] = torch.arange(pack_length).expand(len(bins), -1)
    with torch.no_grad():
        assert abs(model(**leaky).loss.item() - reference) > 1e-4


def test_plan_fills_rows_and_names_an_oversized_example(setup):
    rows, processor, model = setup
    examples = [sft_example(processor, r) for r in rows]
    encoded = EncodedCache(model, processor, examples)
    lengths = [encoded[i].length for i in range(len(examples))]
    stream = iter([i % len(examples) for i in range(10_000)])
    plan = plan_steps(lengths, stream, num_steps=20, rows_per_step=2, pack_length=4 * max(lengths))
    fill = sum(lengths[i] for step in plan for row in step for i in row) / (20 * 2 * 4 * max(lengths))
    assert fill > 0.95
    with pytest.raises(ValueError, match=rf"{examples[lengths.index(max(lengths))].row_id} has {max(lengths)} tokens"):
        plan_steps(lengths, iter(range(len(lengths))), 1, 1, pack_length=max(lengths) - 1,
                   row_ids=[ex.row_id for ex in examples])


def test_packed_training_learns_and_fills_its_rows(setup):
    from model_src.train.supervised import train_supervised

    rows, processor, _ = setup
    cfg = load_config("tiny", ["sft.pack_length=384", "sft.batch_size=2", "sft.num_steps=25"]).sft
    model = build_model(load_config("tiny").model, processor.tokenizer, seed=5)
    logged = []
    summary = train_supervised(model, processor, [sft_example(processor, r) for r in rows], cfg, seed=1,
                               log=lambda metrics, step: logged.append(metrics))
    assert summary["final_loss"] < summary["first_loss"] - 0.5
    assert summary["packing_efficiency"] > 0.95
    assert all(0 < m["packing_efficiency"] <= 1 and m["tokens_per_s"] > 0 and m["model_tflops"] > 0 for m in logged)
    assert not any("mfu" in m for m in logged)  # no known peak on a CPU


def test_flops_charge_each_tower_for_what_runs_through_it(setup):
    """Text parameters per text token, vision blocks per image patch, the merger per merged token:
    the vision tower is no longer charged to every text token."""
    from model_src.train.flops import TokenFlops, causal_pairs

    _, _, model = setup
    visual = model.model.visual
    vision = sum(p.numel() for p in visual.parameters())
    merger = sum(p.numel() for n, c in visual.named_children()
                 if n in ("merger", "downsample", "post_conv_layernorm", "post_layernorm") for p in c.parameters())
    text_dense = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel() - vision
    text, vis = model.config.text_config, model.config.vision_config
    flops = TokenFlops.of(model)
    assert flops.text(1, attention_pairs=0) == 6 * text_dense
    assert flops.text(1, 100) - 6 * text_dense == 12 * text.num_hidden_layers * text.hidden_size * 100
    # a packed row of samples of 30 and 10 tokens: each attends within itself, causally
    pairs = causal_pairs([30, 10])
    assert pairs == 30 * 31 // 2 + 10 * 11 // 2 < 40 * 41 // 2
    # 2 images of 16 patches each (4 merged tokens each) next to those 40 text tokens
    per_patch = 6 * (vision - merger) + 12 * vis.depth * vis.hidden_size * 16 + 6 * merger / 4
    assert flops.step(40, pairs, patches=32, images=2) == pytest.approx(flops.text(40, pairs) + per_patch * 32)
    assert flops.step(40, pairs) == flops.text(40, pairs)  # text only
