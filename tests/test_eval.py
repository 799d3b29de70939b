"""Evaluation: greedy pass@1, sampled pass@k (reproducible), the per-domain table and the
reviewer's worst-examples page."""

from __future__ import annotations

import dataclasses

import pyarrow.parquet as pq
import torch

from model_src.config import load_config
from model_src.data.generate import GeneratorConfig, generate_corpus
from model_src.eval.evaluate import aggregate_sampled, domain_table, evaluate_model, worst_examples_html
from model_src.model.build import build_model, build_processor, train_tokenizer


def test_pass_at_k_table_and_worst_examples(tmp_path):
    generate_corpus(tmp_path, GeneratorConfig(rows={"stem": 12, "digits": 12}))
    rows = [r for f in sorted(tmp_path.glob("*-eval.parquet")) for r in pq.read_table(f).to_pylist()]
    cfg = load_config("tiny")
    tokenizer = train_tokenizer([t for r in rows for t in (r["question"], r["reasoning"], r["answer"])], 400)
    processor = build_processor(tokenizer, cfg.model)
    model = build_model(cfg.model, tokenizer, seed=0)
    eval_cfg = dataclasses.replace(cfg.evaluate, pass_k=2, max_new_tokens=8, max_samples_per_domain=3)
    before = torch.get_rng_state()
    metrics, records = evaluate_model(model, processor, rows, eval_cfg)
    assert torch.equal(torch.get_rng_state(), before)  # sampling does not disturb the caller's RNG
    again, _ = evaluate_model(model, processor, rows, eval_cfg)
    assert again == metrics  # pass@k samples are seeded: the same model scores the same
    for domain in ("stem", "digits"):
        assert 0.0 <= metrics[f"pass_at_2/{domain}"] <= 1.0
        # right/wrong domains: the mean of 2 samples is at most "any of 2 right", and 0 only when pass@2 is
        assert 0.0 <= metrics[f"sampled_accuracy/{domain}"] <= metrics[f"pass_at_2/{domain}"]
        assert (metrics[f"sampled_accuracy/{domain}"] == 0.0) == (metrics[f"pass_at_2/{domain}"] == 0.0)
    assert {r["domain"] for r in records} == {"stem", "digits"} and all("pass_at_2" in r for r in records)
    for domain in ("stem", "digits"):  # the image-blind baseline: the same prompts with blank images
        mine = [r for r in records if r["domain"] == domain]
        assert metrics[f"blind_accuracy/{domain}"] == sum(r["blind_reward"] for r in mine) / len(mine)
        assert metrics[f"visual_gain/{domain}"] == metrics[f"accuracy/{domain}"] - metrics[f"blind_accuracy/{domain}"]
    from mlflow.utils.validation import _validate_metric_name

    for name in metrics:  # what the evaluate stage logs must be a valid MLflow metric name
        _validate_metric_name(name)
    table = domain_table(metrics)
    assert [row["domain"] for row in table] == ["digits", "stem"]
    assert {"accuracy", "format_ok", "pass_at_2", "sampled_accuracy", "forced_answer", "response_tokens"} <= set(table[0])

    page = worst_examples_html(records, rows, per_domain=2)
    assert page.count("<h2>") == 2 and page.count("data:image/png;base64,") >= 4
    worst = min((r for r in records if r["domain"] == "stem"), key=lambda r: (r["reward"], r["id"]))
    assert worst["question"] in page


def test_pass_at_k_and_sampled_accuracy_of_known_rewards():
    """Known rewards in, exact values out: a graded reward below 1 never counts as a pass, a domain's
    figures are the mean over its prompts, and the `_mean` is over domains, not prompts."""
    ids = {"chart": ["c1", "c2", "c3", "c4"], "ocr": ["o1"]}
    rewards = {"c1": [1.0, 1.0, 0.0], "c2": [0.0, 0.0, 0.0], "c3": [0.99, 0.5, 0.2], "c4": [0.0, 0.0, 1.0],
               "o1": [0.25, 0.25, 0.25]}
    metrics, passed = aggregate_sampled(ids, rewards, 3)
    assert passed == {"c1": True, "c2": False, "c3": False, "c4": True, "o1": False}
    assert metrics["pass_at_3/chart"] == 0.5 and metrics["pass_at_3/ocr"] == 0.0
    assert metrics["sampled_accuracy/chart"] == (2 / 3 + 0 + 1.69 / 3 + 1 / 3) / 4
    assert metrics["sampled_accuracy/ocr"] == 0.25
    assert metrics["pass_at_3_mean"] == 0.25  # (0.5 + 0.0) / 2 domains, not 2 passes / 5 prompts
    assert metrics["sampled_accuracy_mean"] == (metrics["sampled_accuracy/chart"] + 0.25) / 2
    assert set(metrics) == {"pass_at_3/chart", "pass_at_3/ocr", "sampled_accuracy/chart", "sampled_accuracy/ocr",
                            "pass_at_3_mean", "sampled_accuracy_mean"}


def _eval_setup(folder):
    """Eval rows and a random tiny policy saved to `folder`."""
    generate_corpus(folder / "raw", GeneratorConfig(rows={"stem": 12, "digits": 12}))
    rows = [r for f in sorted((folder / "raw").glob("*-eval.parquet")) for r in pq.read_table(f).to_pylist()]
    cfg = load_config("tiny")
    tokenizer = train_tokenizer([t for r in rows for t in (r["question"], r["reasoning"], r["answer"])], 400)
    processor = build_processor(tokenizer, cfg.model)
    build_model(cfg.model, tokenizer, seed=0).save_pretrained(folder / "policy")
    processor.save_pretrained(folder / "policy")
    return rows, dataclasses.replace(cfg.evaluate, pass_k=2, max_new_tokens=8, max_samples_per_domain=5, batch_size=2)


def _eval_rank(rank: int, store: str, folder: str, rows, eval_cfg, results) -> None:
    import torch.distributed as dist

    from model_src.model.build import load_model_and_processor

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model, processor = load_model_and_processor(folder)
        results[rank] = evaluate_model(model, processor, rows, eval_cfg)
    finally:
        dist.destroy_process_group()


def test_two_processes_evaluate_like_one(tmp_path):
    """Evaluation as a cluster job: each rank decodes every other batch (greedy and the pass@k
    samples, from per-row seeds) and the records are gathered in order: the same records and
    metrics as one process."""
    import torch.multiprocessing as mp

    from model_src.model.build import load_model_and_processor

    rows, eval_cfg = _eval_setup(tmp_path)
    model, processor = load_model_and_processor(str(tmp_path / "policy"))
    one = evaluate_model(model, processor, rows, eval_cfg)
    results = mp.Manager().dict()
    mp.spawn(_eval_rank, args=(str(tmp_path / "store"), str(tmp_path / "policy"), rows, eval_cfg, results),
             nprocs=2, join=True)
    assert results[0] == results[1] == one
    metrics, records = one
    assert len(records) == metrics["num_samples"] > 2 * eval_cfg.batch_size  # batches on both ranks
    assert "pass_at_2_mean" in metrics
    assert len({r["response"] for r in records}) > 1  # the policy said different things: a real comparison
