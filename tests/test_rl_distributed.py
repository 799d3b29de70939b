"""Data-parallel GRPO: two processes (gloo, CPU) on the same global batch train like one process.

Each rank rolls out half of every draw's prompt groups, from per-group seeds; rewards are gathered
so selection, curriculum and metrics see the whole step; gradients are summed before one identical
step. The two runs' weights, curriculum states and per-iteration metrics agree to float rounding:
a gradient summed over ranks adds in another order than one summed in one process, and Adam's
normalised step turns those 1e-7 gradient differences into weight differences of up to about
1e-5, well under one step's size (lr 3e-3)."""

from __future__ import annotations

import math

import pytest
import torch

from model_src.config import load_config
from tests.conftest import digit_share

OVERRIDES = ["rlcs.num_iterations=3", "rlcs.prompts_per_iteration=4", "rlcs.group_size=4", "rlcs.max_new_tokens=6",
             "rlcs.force_answer_tokens=3", "rlcs.lr=3e-3", "rlcs.checkpoint_every=0", "rlcs.offline_k=2"]


def _train(folder: str, rows: list[dict]) -> dict:
    from model_src.model.build import load_model_and_processor
    from model_src.rl.loop import train_grpo

    model, processor = load_model_and_processor(folder)
    history: list[dict] = []
    summary, curriculum = train_grpo(model, processor, rows, load_config("tiny", OVERRIDES).rlcs, 11,
                                     lambda m, i: history.append(m), reward_fn=digit_share)
    return {"weights": {k: v.clone() for k, v in model.state_dict().items()}, "history": history,
            "curriculum": curriculum.state_dict(), "summary": summary}


def _rank(rank: int, store: str, folder: str, rows: list[dict], results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        results[rank] = _train(folder, rows)
    finally:
        dist.destroy_process_group()


def _close(a, b, path: str = "") -> list[str]:
    """Where two nested results differ beyond float rounding."""
    if isinstance(a, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, torch.Tensor):
        return [] if torch.allclose(a, b, rtol=1e-4, atol=3e-5) else [f"{path}: max diff {(a - b).abs().max():.3g}"]
    if isinstance(a, float):
        return [] if math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path):
    import torch.multiprocessing as mp

    from model_src.data.generate import GeneratorConfig, domain_rows
    from model_src.model.build import build_model, build_processor, train_tokenizer

    rows = domain_rows(GeneratorConfig(rows={"digits": 14}), "digits", "train")
    tiny = load_config("tiny")
    processor = build_processor(train_tokenizer([r["question"] for r in rows], 300), tiny.model)
    build_model(tiny.model, processor.tokenizer, seed=0).save_pretrained(tmp_path / "policy")
    processor.save_pretrained(tmp_path / "policy")

    one = _train(str(tmp_path / "policy"), rows)
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path / "policy"), rows, results), nprocs=2, join=True)
    two = [results[0], results[1]]

    assert not _close(two[0], two[1]), "the two ranks disagree"
    differences = _close(one, two[0])
    assert not differences, differences[:10]
    # the run did something: weights moved, groups spread, and expansion drew more than a batch
    initial = build_model(tiny.model, processor.tokenizer, seed=0).state_dict()
    assert any(not torch.equal(initial[k], one["weights"][k]) for k in initial)
    assert all(h["effective_group_share"] > 0 for h in one["history"])
    assert one["summary"]["rollouts_total"] == sum(h["sampled_prompts"] for h in one["history"]) * 4


def test_a_groups_rollouts_depend_on_its_seed_not_on_the_batch_it_is_in():
    from model_src.data.generate import GeneratorConfig, domain_rows
    from model_src.model.build import build_model, build_processor, train_tokenizer
    from model_src.model.inputs import prompt_example
    from model_src.rl.rollout import TransformersEngine

    rows = domain_rows(GeneratorConfig(rows={"digits": 6}), "digits", "train")
    tiny = load_config("tiny")
    processor = build_processor(train_tokenizer([r["question"] for r in rows], 300), tiny.model)
    engine = TransformersEngine(build_model(tiny.model, processor.tokenizer, seed=0), processor)
    examples = [prompt_example(processor, r) for r in rows[:4]]
    kwargs = dict(n=3, max_new_tokens=8, do_sample=True, force_answer_tokens=3)
    together = engine.generate(examples, seeds=[10, 11, 12, 13], **kwargs)
    apart = [engine.generate([ex], seeds=[s], **kwargs) for ex, s in zip(examples, [10, 11, 12, 13])]
    assert together.texts == [t for ro in apart for t in ro.texts]
    assert len(set(together.texts)) > 4  # sampled: the rows of a group differ
    reseeded = engine.generate(examples[:1], seeds=[99], **kwargs)
    assert reseeded.texts != apart[0].texts
    with pytest.raises(ValueError, match="2 seeds for 3 examples"):
        from model_src.model.generate import generate

        generate(engine.model, processor, examples[:3], max_new_tokens=4, do_sample=True, seeds=[1, 2])
