"""Held-out evaluation: greedy decoding, scored by the same `score` as RL rewards."""

from __future__ import annotations

import hashlib

import statistics
from collections import defaultdict

from model_src.config import EvalConfig
from model_src.model.generate import generate
from model_src.model.inputs import prompt_example
from model_src.data.schema import reward_domain
from model_src.rewards import score


def evaluate_model(model, processor, rows: list[dict], cfg: EvalConfig) -> tuple[dict[str, float], list[dict]]:
    """Returns (metrics, per-sample records). Metrics: `accuracy/<domain>`, `format_ok/<domain>`,
    `accuracy_mean` (mean over domains) and `num_samples`."""
    from tqdm import tqdm

    by_domain: dict[str, list[dict]] = defaultdict(list)
    # a deterministic but task-mixed pick: ids sort by task ("chart-diff-..." before "chart-peak-...")
    for row in sorted(rows, key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest()):
        if len(by_domain[row["domain"]]) < cfg.max_samples_per_domain:
            by_domain[row["domain"]].append(row)
    selected = [row for domain in sorted(by_domain) for row in by_domain[domain]]
    if not selected:
        raise ValueError("evaluate: the eval split is empty")
    records: list[dict] = []
    for start in tqdm(range(0, len(selected), cfg.batch_size), desc="evaluate", unit="batch"):
        chunk = selected[start:start + cfg.batch_size]
        examples = [prompt_example(processor, row) for row in chunk]
        out = generate(model, processor, examples, max_new_tokens=cfg.max_new_tokens, do_sample=False,
                       force_answer_tokens=cfg.force_answer_tokens)
        lengths = out.response_mask.sum(dim=1).tolist()
        for row, text, forced, length in zip(chunk, out.texts, out.forced, lengths):
            result = score(reward_domain(row), text, row["answer"], question=row["question"])
            records.append({"id": row["id"], "domain": row["domain"], "question": row["question"],
                            "reference": row["answer"], "response": text, "reward": result.reward,
                            "format_ok": result.format_ok, "reason": result.reason, "forced": forced,
                            "response_tokens": int(length)})
    metrics: dict[str, float] = {}
    for domain in sorted(by_domain):
        mine = [r for r in records if r["domain"] == domain]
        metrics[f"accuracy/{domain}"] = statistics.fmean(r["reward"] for r in mine)
        metrics[f"format_ok/{domain}"] = statistics.fmean(float(r["format_ok"]) for r in mine)
        metrics[f"forced_answer/{domain}"] = statistics.fmean(float(r["forced"]) for r in mine)
        metrics[f"response_tokens/{domain}"] = statistics.fmean(r["response_tokens"] for r in mine)
    metrics["accuracy_mean"] = statistics.fmean(metrics[f"accuracy/{d}"] for d in sorted(by_domain))
    metrics["format_ok_mean"] = statistics.fmean(metrics[f"format_ok/{d}"] for d in sorted(by_domain))
    metrics["num_samples"] = float(len(records))
    return metrics, records
