"""Does the model read its images? Greedy answers of a pipeline model on the held-out split, per
domain and task, with and without the images.

For each task: greedy accuracy, the image-blind accuracy (every image replaced by a blank one of
the same size, as the evaluate stage's baseline), the visual gain, and how varied the answers are
(distinct answers, and the share of the most common one). A model that answers from priors gives
one answer to most prompts of a task and gains nothing from the image. The last two columns say
how long the task's reference responses are in the model's tokens and what share of them is
longer than `--max-new-tokens`: those cannot be answered, whatever the model reads. `--continue-sft` first
continues that model's SFT on freshly generated rows of `--domains` for each step count given, and
reports the same table for each: how many steps the skill of reading needs.

Needs a finished pipeline run in the MLflow store (`make run`): it takes that run's model of
`--stage` and its curated eval split. Writes `bench/out/reading.json`.

    .venv/bin/python bench/bench_reading.py [--stage sft|rlcs|pretrain] [--domains digits,counting]
        [--continue-sft 600 1200 3000 --sft-rows 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"


def reading_table(model_dir: Path, eval_rows: list[dict], batch_size: int, max_new_tokens: int) -> list[dict]:
    """One row per (domain, task) of `eval_rows`: n, accuracy, blind accuracy, distinct answers and
    the most common answer with its share, from greedy decoding of every row (the blind pass too);
    and how long the reference responses are in the model's tokens, with the share of them longer
    than `max_new_tokens` (a task whose answers cannot fit scores nothing, reading or not)."""
    from model_src.config import EvalConfig
    from model_src.eval.evaluate import evaluate_model
    from model_src.model.build import load_model_and_processor
    from model_src.data.schema import format_response
    from model_src.rewards.core import ANSWER_OPEN, extract_box

    model, processor = load_model_and_processor(str(model_dir))
    model.eval()
    cfg = EvalConfig(max_new_tokens=max_new_tokens, max_samples_per_domain=len(eval_rows), batch_size=batch_size,
                     checkpoint_samples_per_domain=0, blind_baseline=True)
    _, records = evaluate_model(model, processor, eval_rows, cfg)
    task_of = {row["id"]: row["task"] for row in eval_rows}
    references = {row["id"]: format_response(row["reasoning"], row["answer"]) for row in eval_rows}
    reference_tokens = {i: len(processor.tokenizer(text)["input_ids"]) for i, text in references.items()}
    # what a forced answer (`force_answer_tokens`) must fit: the reference after its `<answer>`
    answer_tokens = {i: len(processor.tokenizer(text.split(ANSWER_OPEN, 1)[1])["input_ids"])
                     for i, text in references.items()}
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in records:
        groups[(record["domain"], task_of[record["id"]])].append(record)
    table = []
    for (domain, task), mine in sorted(groups.items()):
        answers = Counter(extract_box(r["response"]) or "(no answer)" for r in mine)
        top, count = answers.most_common(1)[0]
        table.append({"domain": domain, "task": task, "n": len(mine),
                      "accuracy": statistics.fmean(r["reward"] for r in mine),
                      "blind_accuracy": statistics.fmean(r["blind_reward"] for r in mine),
                      "distinct_answers": len(answers), "top_answer": top, "top_share": count / len(mine),
                      "reference_tokens": statistics.fmean(reference_tokens[r["id"]] for r in mine),
                      "over_budget": statistics.fmean(reference_tokens[r["id"]] > max_new_tokens for r in mine),
                      "answer_tokens_max": max(answer_tokens[r["id"]] for r in mine)})
    return table


def print_table(title: str, table: list[dict]) -> None:
    print(f"\n{title}\n")
    print("| domain | task | n | accuracy | blind | visual gain | distinct answers | top answer (share) "
          "| reference tokens (mean) | longer than the budget | answer tokens (max) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['domain']} | {t['task']} | {t['n']} | {t['accuracy']:.3f} | {t['blind_accuracy']:.3f} | "
              f"{t['accuracy'] - t['blind_accuracy']:+.3f} | {t['distinct_answers']} | "
              f"{t['top_answer'][:20]} ({t['top_share']:.0%}) | {t['reference_tokens']:.0f} | {t['over_budget']:.0%} | "
              f"{t['answer_tokens_max']} |")


def main() -> None:
    from bench_rlcs import WARMUP_SEED, fresh_rows, last_run_model_and_eval, warm_up

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="thinkpipe")
    parser.add_argument("--stage", default="sft", choices=["pretrain", "sft", "rlcs"], help="whose model to read with")
    parser.add_argument("--domains", default="all", help="comma-separated domains of the eval split, or 'all'")
    parser.add_argument("--continue-sft", type=int, nargs="*", default=[],
                        help="also continue SFT on fresh rows of --domains for each of these step counts")
    parser.add_argument("--sft-rows", type=int, default=3000, help="fresh rows for --continue-sft")
    parser.add_argument("--seed", type=int, default=0, help="seed of the continued SFT")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=0,
                        help="the answer budget; 0 = the `small` profile's evaluate.max_new_tokens")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if not args.max_new_tokens:
        from model_src.config import load_config

        args.max_new_tokens = load_config("small").evaluate.max_new_tokens
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-reading-"))
    model_dir, eval_rows, domains = last_run_model_and_eval(args.experiment, args.stage, args.domains, tmp)
    results = {"stage": args.stage, "domains": domains, "tables": {}}
    table = reading_table(model_dir, eval_rows, args.batch_size, args.max_new_tokens)
    results["tables"]["0"] = table
    print_table(f"{args.stage} model of the last run, {len(eval_rows)} held-out prompts", table)
    if args.continue_sft:
        rows = fresh_rows(domains, args.sft_rows, WARMUP_SEED, eval_rows, "reading")
        for steps in args.continue_sft:
            tuned = warm_up(model_dir, rows, steps, args.seed, tmp / f"sft-{steps}")
            table = reading_table(tuned, eval_rows, args.batch_size, args.max_new_tokens)
            results["tables"][str(steps)] = table
            print_table(f"after {steps} more SFT steps on {len(rows)} fresh rows of {','.join(domains)}", table)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "reading.json").write_text(json.dumps(results, indent=1))
    print(f"\n{time.monotonic() - started:.0f} s; per-task tables in {OUT / 'reading.json'}")


if __name__ == "__main__":
    main()
