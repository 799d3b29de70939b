"""Run under the serving venv's python (vLLM + transformers <5.20): both rollout engines on one
exported tiny Glm4v folder, compared; writes a JSON report.

    .venv-serve/bin/python tests/vllm_rollout_driver.py --folder EXPORTED --out report.json [--extra-sys-path DIR]

Checks (an AssertionError fails the run; the report says what was measured):
1. greedy rollouts of a few image prompts (one with two images), with a budget long enough for
   answers and one short enough to force answering: identical prompt batch, sequences (response
   token ids), response and loss masks, texts and forced flags from TransformersEngine and VLLMEngine;
2. sampled groups (`n` per prompt, seeded from torch's RNG): the shape, reproducibility from the
   same torch seed, and that a group is not n copies of one rollout;
3. the rollouts score under the policy forward (`response_logprobs`) like transformers' do;
4. weight sync: after perturbing the policy, the stale vLLM engine still answers as before; after
   `sync_weights` its greedy rollouts equal transformers' on the perturbed policy and differ from before.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _image(seed: int, size=(112, 84)):
    from PIL import Image, ImageDraw

    w, h = size
    image = Image.new("RGB", size)
    image.putdata([((x * (2 + seed)) % 256, (y * (3 + seed)) % 256, (255 - x * seed) % 256)
                   for y in range(h) for x in range(w)])
    ImageDraw.Draw(image).text((w // 3, h // 3), str(seed), fill=(0, 0, 0))
    return image


def _examples(processor):
    from model_src.model.inputs import Example, chat_prompt

    specs = [("a", [_image(7)], "Which digit is written in the image?"),
             ("b", [_image(2, (84, 112))], "How many shapes are there?"),
             ("c", [_image(3), _image(5, (56, 56))], "What is the sum of the two digits shown in the images?"),
             ("d", [_image(9, (140, 70))], "Read the text.")]
    return [Example(i, "stem", tuple(images), chat_prompt(processor, {"images": images, "question": q}), "", "0")
            for i, images, q in specs]


def _same(a, b) -> dict:
    """Field-by-field equality of two Rollouts."""
    return {
        "prompt_ids": bool((a.batch["input_ids"] == b.batch["input_ids"]).all()),
        "sequences": a.sequences.shape == b.sequences.shape and bool((a.sequences == b.sequences).all()),
        "response_mask": a.response_mask.shape == b.response_mask.shape and bool((a.response_mask == b.response_mask).all()),
        "loss_mask": a.loss_mask.shape == b.loss_mask.shape and bool((a.loss_mask == b.loss_mask).all()),
        "texts": a.texts == b.texts,
        "forced": a.forced == b.forced,
    }


def _timed(fn):
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--extra-sys-path", default=None, help="appended to sys.path (e.g. a folder with pyarrow)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.extra_sys_path:
        sys.path.append(args.extra_sys_path)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import transformers
    import vllm

    from model_src.model.build import load_model_and_processor
    from model_src.rl.loop import response_logprobs
    from model_src.rl.rollout import TransformersEngine, VLLMEngine

    report: dict = {"vllm": vllm.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                    "timings_s": {}}
    t = report["timings_s"]
    model, processor = load_model_and_processor(args.folder)
    model.eval()
    examples = _examples(processor)
    hf = TransformersEngine(model, processor)
    engine, t["vllm_engine_start"] = _timed(lambda: VLLMEngine(model, processor, seed=0, enforce_eager=True))

    # 1. greedy, both engines: a normal budget and a short one that forces answers
    greedy = {}
    for label, budget, force in (("long", 24, 16), ("short", 5, 6)):
        kw = dict(max_new_tokens=budget, do_sample=False, force_answer_tokens=force)
        ref, t[f"transformers_greedy_{label}"] = _timed(lambda: hf.generate(examples, **kw))
        got, t[f"vllm_greedy_{label}"] = _timed(lambda: engine.generate(examples, **kw))
        same = _same(ref, got)
        report[f"greedy_{label}"] = {"same": same, "forced": ref.forced, "vllm_forced": got.forced,
                                     "texts": ref.texts, "vllm_texts": got.texts,
                                     "response_lengths": ref.response_mask.sum(1).tolist()}
        greedy[label] = (ref, got)
        assert all(same.values()), f"greedy {label}: engines differ: {same}\n{ref.texts}\n{got.texts}"
    assert any(greedy["short"][0].forced), "the short budget forced no answer: force answering untested"

    # 2. sampled groups: n per prompt, seeded from torch's RNG
    kw = dict(n=4, max_new_tokens=12, do_sample=True, temperature=1.0, top_p=1.0, force_answer_tokens=4)
    torch.manual_seed(123)
    first, t["vllm_sampled_4x4"] = _timed(lambda: engine.generate(examples, **kw))
    torch.manual_seed(123)
    again = engine.generate(examples, **kw)
    torch.manual_seed(124)
    other = engine.generate(examples, **kw)
    assert first.sequences.shape[0] == len(examples) * 4 and len(first.texts) == len(examples) * 4
    assert first.batch["input_ids"].shape[0] == len(examples) * 4
    assert all(_same(first, again).values()), "the same torch seed gave other rollouts"
    assert not all(_same(first, other).values()), "another torch seed gave the same rollouts"
    distinct = [len({tuple(first.sequences[g * 4 + k].tolist()) for k in range(4)}) for g in range(len(examples))]
    report["sampled"] = {"distinct_per_group": distinct, "forced": first.forced, "texts": first.texts}
    assert max(distinct) > 1, "every group is n copies of one rollout"

    # 3. the policy scores vLLM's rollouts as it scores its own
    with torch.no_grad():
        ref, got = greedy["short"]
        lp_ref, lp_got = response_logprobs(model, ref), response_logprobs(model, got)
        picked = first.select([0, 5, 9, 14])  # select() keeps pixel rows per sample (two-image prompt too)
        lp_sampled = response_logprobs(model, picked)
    report["logprob_max_abs_diff"] = float(((lp_ref - lp_got) * ref.response_mask).abs().max())
    assert report["logprob_max_abs_diff"] == 0.0
    assert torch.isfinite(lp_sampled).all()

    # 4. weight sync. The perturbation: noise on every weight, and the end-of-text row of the output
    # layer made a slightly larger copy of the row of a token that some greedy responses write and
    # others do not, so that (where that token won with a positive logit) rows now stop: rows that
    # end at a stop token, padded, next to rows that are forced, in one batch.
    before = greedy["long"][0]
    budget_rows = before.sequences[:, before.prompt_len:]
    eos = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    counts = {}
    for row in budget_rows.tolist():
        for token in set(row):
            counts[token] = counts.get(token, 0) + 1
    partial = [t for t, c in counts.items() if c < len(examples) and t != eos]
    takeover = max(partial, key=lambda t: int((budget_rows == t).sum())) if partial else None
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.02 * (param.std() if param.numel() > 1 else 1))
        if takeover is not None:
            head = model.get_output_embeddings().weight
            head[eos] = head[takeover] * 1.05
    report["eos_takes_over_token"] = takeover
    kw = dict(max_new_tokens=24, do_sample=False, force_answer_tokens=16)
    stale = engine.generate(examples, **kw)
    perturbed, t["transformers_greedy_perturbed"] = _timed(lambda: hf.generate(examples, **kw))
    _, t["vllm_sync_weights"] = _timed(lambda: engine.sync_weights(model))
    synced, t["vllm_greedy_synced"] = _timed(lambda: engine.generate(examples, **kw))
    report["sync"] = {"stale_equals_before": _same(stale, before), "synced_equals_perturbed": _same(synced, perturbed),
                      "perturbed_equals_before": _same(perturbed, before), "texts_before": before.texts,
                      "texts_after": perturbed.texts, "vllm_texts_after": synced.texts}
    assert all(_same(stale, before).values()), "before the sync vLLM should still generate with the old weights"
    assert not all(_same(perturbed, before).values()), "the perturbation changed no rollout: sync untested"
    assert all(_same(synced, perturbed).values()), f"after sync vLLM differs from transformers: {report['sync']}"
    report["sync"]["forced_after"] = perturbed.forced
    report["sync"]["response_lengths_after"] = perturbed.response_mask.sum(1).tolist()
    assert not all(perturbed.forced), "no row stopped by itself after the perturbation: stop handling untested"
    engine.close()
    report["ok"] = True
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report["timings_s"], indent=1))


if __name__ == "__main__":
    main()
