"""The GRPO loop end to end on a tiny random model: the reward it is trained on goes up, and the
curriculum's effective-group accounting follows the reward spread."""

from __future__ import annotations

import statistics

import pyarrow.parquet as pq

from model_src.config import load_config
from model_src.data.generate import GeneratorConfig, generate_corpus
from model_src.model.build import build_model, build_processor, train_tokenizer
from model_src.rl.loop import train_grpo
from tests.conftest import digit_share


def test_grpo_raises_the_reward_it_is_trained_on(tmp_path):
    generate_corpus(tmp_path, GeneratorConfig(rows={"digits": 16}))
    rows = pq.read_table(tmp_path / "digits-train.parquet").to_pylist()
    tiny = load_config("tiny", ["rlcs.num_iterations=16", "rlcs.max_new_tokens=6", "rlcs.force_answer_tokens=0",
                                "rlcs.lr=3e-3", "rlcs.group_size=6", "rlcs.checkpoint_every=0"])
    cfg = tiny.rlcs
    tokenizer = train_tokenizer([r["caption"] for r in rows], 300)
    processor = build_processor(tokenizer, tiny.model)
    model = build_model(tiny.model, tokenizer, seed=0)
    history = []
    summary, curriculum = train_grpo(model, processor, rows, cfg, 0, lambda m, i: history.append(m),
                                     reward_fn=digit_share)
    first = statistics.fmean(h["reward_mean"] for h in history[:4])
    last = statistics.fmean(h["reward_mean"] for h in history[-4:])
    assert last > 2 * first and last > first + 0.05, [round(h["reward_mean"], 3) for h in history]
    # graded rewards spread in (nearly) every group: (nearly) every kept group is effective
    assert statistics.fmean(h["effective_group_share"] for h in history) > 0.8
    # the update keeps the most spread groups, so the kept share is never below the share of all drawn
    assert all(0.0 <= h["sampled_effective_group_share"] <= h["effective_group_share"] for h in history)
    assert all(0.0 <= h["accuracy/digits"] <= h["reward_mean/digits"] <= 1.0 for h in history)
    assert summary["rollouts_total"] == sum(h["sampled_prompts"] for h in history) * cfg.group_size
    # sampled prompts now use their own pass rate, and every task sampled has an online one
    assert curriculum.seen and set(curriculum.task_rates) == {f"digits/{r['task']}" for r in rows}


def test_offline_grading_merges_pass_at_k_with_the_prior_and_marks_prompts_graded(tmp_path):
    from model_src.model.inputs import prompt_example
    from model_src.rl.loop import build_curriculum

    generate_corpus(tmp_path, GeneratorConfig(rows={"digits": 8}))
    rows = pq.read_table(tmp_path / "digits-train.parquet").to_pylist()
    cfg = load_config("tiny", ["rlcs.offline_k=2", "rlcs.max_new_tokens=4", "rlcs.force_answer_tokens=0"])
    tokenizer = train_tokenizer([r["caption"] for r in rows], 300)
    processor = build_processor(tokenizer, cfg.model)
    model = build_model(cfg.model, tokenizer, seed=0)
    examples = [prompt_example(processor, row) for row in rows]
    curriculum = build_curriculum(model, processor, rows, examples, cfg.rlcs)
    # a random model never writes the answer format: every graded pass rate is 0, halving the prior
    assert curriculum.pass_rates == {r["id"]: 0.5 * (1.0 - r["difficulty"]) for r in rows}
    assert curriculum.seen == {r["id"] for r in rows}  # graded prompts keep their own rate
    prior_only = build_curriculum(model, processor, rows, examples, load_config("tiny").rlcs)
    assert prior_only.pass_rates == {r["id"]: 1.0 - r["difficulty"] for r in rows} and not prior_only.seen
