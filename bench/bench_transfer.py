"""Cross-domain transfer of RL, the GLM-4.1V-Thinking paper's transfer figure in miniature: RL on
one domain at a time from the same SFT model, held-out accuracy on every domain.

Takes the SFT model, the curated RL split and the eval split of the newest finished pipeline run
in the MLflow store (`make run`). For each domain with RL prompts, and for `all` (the mix, as the
RLCS stage trains), GRPO with curriculum sampling (`--profile`'s RL settings) runs for `--budget`
rollouts on that domain's RL prompts only, from the same SFT model and seed. Then every held-out
prompt of every domain (all of them) is answered greedily. The table gives the change in accuracy
over the SFT model on the same prompts, per held-out domain, with its paired standard error; the
heatmap colours those changes and marks those beyond two standard errors.

Writes bench/out/transfer.json (every cell, the per-prompt rewards) and bench/out/transfer.png.

    .venv/bin/python bench/bench_transfer.py [--budget 1024] [--jobs 2] [--rl-domains digits,video]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "bench" / "out"
MIX = "all"


def rewards_by_id(model, processor, eval_rows: list[dict], eval_cfg) -> dict[str, float]:
    from model_src.eval.evaluate import evaluate_model

    _, records = evaluate_model(model, processor, eval_rows, eval_cfg)
    return {r["id"]: r["reward"] for r in records}


def rl_then_evaluate(rl_domain: str, sft: str, rl_rows: list[dict], eval_rows: list[dict], profile: str,
                     budget: int, seed: int, overrides: list[str]) -> dict:
    """GRPO from `sft` on `rl_rows` for `budget` rollouts, then greedy rewards on every eval row."""
    from model_src.config import load_config
    from model_src.model.build import load_model_and_processor
    from model_src.rl.loop import train_grpo

    cfg = load_config(profile, ["rlcs.num_iterations=100000", f"rlcs.max_rollouts={budget}",
                                f"evaluate.max_samples_per_domain={len(eval_rows)}", "evaluate.checkpoint_samples_per_domain=0",
                                "evaluate.pass_k=0",
                                "evaluate.blind_baseline=false", *overrides])
    model, processor = load_model_and_processor(sft)
    started = time.monotonic()
    if rl_rows:
        summary, _ = train_grpo(model, processor, rl_rows, cfg.rlcs, seed, lambda metrics, step: None)
    else:  # the SFT model itself: the baseline every cell is compared with
        summary = {}
    model.eval()
    rewards = rewards_by_id(model, processor, eval_rows, cfg.evaluate)
    return {"rl_domain": rl_domain, "rl_prompts": len(rl_rows), "rewards": rewards,
            "final_reward_mean": summary.get("final_reward_mean"), "seconds": round(time.monotonic() - started)}


def transfer_cell(base: dict[str, float], tuned: dict[str, float], ids: list[str]) -> tuple[float, float]:
    """(mean change of reward over `ids`, its paired standard error).

    >>> transfer_cell({"a": 0.0, "b": 1.0, "c": 0.0}, {"a": 1.0, "b": 1.0, "c": 1.0}, ["a", "b", "c"])
    (0.6666666666666666, 0.3333333333333333)
    """
    diffs = [tuned[i] - base[i] for i in ids]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
    return statistics.fmean(diffs), se


def heatmap(table: dict, rl_domains: list[str], eval_domains: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    gains = np.array([[table[r][d]["gain"] for d in eval_domains] for r in rl_domains])
    limit = max(0.05, float(np.abs(gains).max()))
    fig, ax = plt.subplots(figsize=(1.0 * len(eval_domains) + 2.5, 0.55 * len(rl_domains) + 1.8))
    image = ax.imshow(gains, cmap="RdBu", vmin=-limit, vmax=limit)
    for i, r in enumerate(rl_domains):
        for j, d in enumerate(eval_domains):
            cell = table[r][d]
            mark = "*" if abs(cell["gain"]) > 2 * cell["se"] and cell["se"] > 0 else ""
            ax.text(j, i, f"{cell['gain']:+.2f}{mark}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(eval_domains)), eval_domains, rotation=30)
    ax.set_yticks(range(len(rl_domains)), [f"RL on {r}" for r in rl_domains])
    ax.set_xlabel("held-out domain (greedy accuracy change over SFT; * beyond 2 paired SE)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="thinkpipe")
    parser.add_argument("--profile", default="small", help="whose RL and evaluation settings to use")
    parser.add_argument("--rl-domains", default="all",
                        help="comma-separated domains to run RL on one at a time, or 'all' (each domain, then the mix)")
    parser.add_argument("--budget", type=int, default=1024, help="rollouts per RL run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="RL runs at once (one thread each)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from bench_rlcs import last_run_model_and_eval, latest_outputs, one_thread
    from model_src.data.schema import read_split

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    sft, eval_rows, eval_domains = last_run_model_and_eval(args.experiment, "sft", "all", tmp)
    rl_split = read_split(latest_outputs(args.experiment, "curate", "rl", tmp / "rl"))
    have_rl = sorted({r["domain"] for r in rl_split})
    rl_domains = have_rl + [MIX] if args.rl_domains == "all" else args.rl_domains.split(",")
    unknown = sorted(set(rl_domains) - set(have_rl) - {MIX})
    if unknown:
        raise SystemExit(f"--rl-domains: no RL prompts of {unknown} in the last run's RL split (it has {have_rl})")
    pools = {d: rl_split if d == MIX else [r for r in rl_split if r["domain"] == d] for d in rl_domains}
    print(f"SFT model of the last run; {len(eval_rows)} held-out prompts over {len(eval_domains)} domains; RL on "
          + ", ".join(f"{d} ({len(pools[d])} prompts)" for d in rl_domains) + f"; {args.budget} rollouts each",
          flush=True)
    jobs = [("sft", [])] + [(d, pools[d]) for d in rl_domains]
    import multiprocessing

    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=one_thread) as pool:
        futures = [pool.submit(rl_then_evaluate, name, str(sft), rows, eval_rows, args.profile, args.budget,
                               args.seed, args.set) for name, rows in jobs]
        runs = {}
        for future in futures:
            result = future.result()
            runs[result["rl_domain"]] = result
            print(f"  {result['rl_domain']:<10} done in {result['seconds']} s", flush=True)
    base = runs.pop("sft")["rewards"]
    ids_of = {d: [r["id"] for r in eval_rows if r["domain"] == d] for d in eval_domains}
    table = {}
    for r in rl_domains:
        table[r] = {}
        for d in eval_domains:
            gain, se = transfer_cell(base, runs[r]["rewards"], ids_of[d])
            table[r][d] = {"gain": gain, "se": se, "accuracy": statistics.fmean(runs[r]["rewards"][i] for i in ids_of[d])}
    sft_accuracy = {d: statistics.fmean(base[i] for i in ids_of[d]) for d in eval_domains}

    print(f"\nGreedy held-out accuracy change over the SFT model (paired SE), {args.budget} rollouts of RL per row, "
          f"seed {args.seed}; * = beyond 2 SE\n")
    print("| RL on | " + " | ".join(eval_domains) + " |")
    print("|---|" + "---|" * len(eval_domains))
    print("| (SFT accuracy) | " + " | ".join(f"{sft_accuracy[d]:.3f}" for d in eval_domains) + " |")
    for r in rl_domains:
        cells = [table[r][d] for d in eval_domains]
        print(f"| {r} | " + " | ".join(f"{c['gain']:+.3f} ({c['se']:.3f}){'*' if abs(c['gain']) > 2 * c['se'] > 0 else ''}"
                                       for c in cells) + " |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "transfer.json").write_text(json.dumps(
        {"budget": args.budget, "seed": args.seed, "profile": args.profile, "sft_accuracy": sft_accuracy,
         "table": table, "runs": runs, "sft_rewards": base}, indent=1))
    heatmap(table, rl_domains, eval_domains, OUT / "transfer.png",
            f"RL on one domain at a time from the same SFT model ({args.budget} rollouts each)")
    print(f"\n{time.monotonic() - started:.0f} s; {OUT / 'transfer.png'}, {OUT / 'transfer.json'}")


if __name__ == "__main__":
    main()
