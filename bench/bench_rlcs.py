"""RLCS vs uniform sampling from the same SFT checkpoint, same rollout budget, several seeds.

Reports held-out accuracy against rollouts for both, the rollouts RLCS needs to reach uniform's
final accuracy (goal <= 0.6x of uniform's budget), and the effective-group share (groups with both
right and wrong rollouts) with expansion (RLCS) and without (uniform; goal >= 90% with).

Needs a finished `small` pipeline run in the MLflow store (`make run`): it takes that run's SFT
model and its curated RL and eval splits.

    .venv/bin/python bench/bench_rlcs.py [--budget 1536] [--seeds 0 1 2] [--eval-every 256] [--set rlcs.lr=1e-3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def latest_outputs(experiment: str, stage: str, name: str, dest: Path) -> Path:
    """Download `outputs/<name>` of the newest FINISHED run of `stage`."""
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment '{experiment}': run `make run` first")
    runs = client.search_runs([exp.experiment_id], f"tags.`thinkpipe.stage` = '{stage}' AND attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit(f"no finished {stage} run in '{experiment}': run `make run` first")
    source = runs[0].data.tags.get("thinkpipe.outputs_run_id", runs[0].info.run_id)
    return Path(mlflow.artifacts.download_artifacts(run_id=source, artifact_path=f"outputs/{name}", dst_path=str(dest)))


def run_variant(curriculum: bool, seed: int, args, sft: Path, rl_rows, eval_rows) -> dict:
    from model_src.config import load_config
    from model_src.eval.evaluate import evaluate_model
    from model_src.model.build import load_model_and_processor
    from model_src.rl.loop import train_grpo

    cfg = load_config("small", [f"rlcs.curriculum={str(curriculum).lower()}", "rlcs.num_iterations=100000",
                                f"rlcs.max_rollouts={args.budget}", "evaluate.max_samples_per_domain=64",
                                *(args.set or [])])
    model, processor = load_model_and_processor(str(sft))
    curve = [(0, evaluate_model(model, processor, eval_rows, cfg.evaluate)[0]["accuracy_mean"])]
    shares: list[float] = []
    next_eval = [args.eval_every]

    def log(metrics: dict, step: int) -> None:
        shares.append(metrics["effective_group_share"])
        if metrics["rollouts_total"] >= next_eval[0] or metrics["rollouts_total"] >= args.budget:
            accuracy = evaluate_model(model, processor, eval_rows, cfg.evaluate)[0]["accuracy_mean"]
            curve.append((int(metrics["rollouts_total"]), accuracy))
            next_eval[0] += args.eval_every

    train_grpo(model, processor, rl_rows, cfg.rlcs, seed, log)
    return {"curriculum": curriculum, "seed": seed, "curve": curve, "effective_group_share": statistics.fmean(shares)}


def rollouts_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    for rollouts, accuracy in curve:
        if accuracy >= target:
            return rollouts
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="thinkpipe")
    parser.add_argument("--budget", type=int, default=1536, help="rollouts per RL run")
    parser.add_argument("--eval-every", type=int, default=256, help="rollouts between held-out evaluations")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override for both variants")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    from model_src.data.curate import read_split

    from pipelines.cli import DEFAULT_STATE_DIR, resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(None, ROOT / DEFAULT_STATE_DIR)[0])
    tmp = Path(tempfile.mkdtemp(prefix="bench-rlcs-"))
    sft = latest_outputs(args.experiment, "sft", "model", tmp / "sft")
    rl_rows = read_split(latest_outputs(args.experiment, "curate", "rl", tmp / "rl"))
    eval_rows = read_split(latest_outputs(args.experiment, "curate", "eval", tmp / "eval"))
    started = time.monotonic()
    results = [run_variant(c, s, args, sft, rl_rows, eval_rows) for s in args.seeds for c in (True, False)]

    def mean_curve(curriculum: bool) -> list[tuple[int, float]]:
        """Mean over seeds at each evaluation point (rollouts averaged too: batches differ in size)."""
        curves = [r["curve"] for r in results if r["curriculum"] is curriculum]
        points = min(len(c) for c in curves)
        return [(round(statistics.fmean(c[i][0] for c in curves)), statistics.fmean(c[i][1] for c in curves))
                for i in range(points)]

    rlcs, uniform = mean_curve(True), mean_curve(False)
    start, target = uniform[0][1], uniform[-1][1]
    needed = rollouts_to_reach(rlcs[1:], target)
    share = {c: statistics.fmean(r["effective_group_share"] for r in results if r["curriculum"] is c) for c in (True, False)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rlcs_vs_uniform.json").write_text(json.dumps({"results": results, "rlcs": rlcs, "uniform": uniform}, indent=2))
    _plot(rlcs, uniform)
    print(f"seeds {args.seeds}, budget {args.budget} rollouts each, {time.monotonic() - started:.0f} s")
    print("held-out accuracy vs rollouts (mean over seeds):")
    for (n, a), (m, b) in zip(rlcs, uniform):
        print(f"  rlcs {a:.3f} at {n:>5} rollouts   uniform {b:.3f} at {m:>5} rollouts")
    if target <= start:
        print(f"uniform's final accuracy {target:.3f} is not above the SFT start {start:.3f}: no RL gain to race "
              f"to, so the rollouts-to-match ratio is not informative here (goal <= 0.6x: not measurable)")
    elif needed is None:
        print(f"RLCS did not reach uniform's final accuracy {target:.3f} within the budget (goal <= 0.6x: NOT met)")
    else:
        ratio = needed / uniform[-1][0]
        print(f"rollouts to reach uniform's final accuracy {target:.3f}: rlcs {needed} vs uniform {uniform[-1][0]} "
              f"= {ratio:.2f}x (goal <= 0.6x: {'met' if ratio <= 0.6 else 'NOT met'})")
    print(f"effective-group share: with expansion {share[True]:.1%}, without {share[False]:.1%} "
          f"(goal >= 90% with: {'met' if share[True] >= 0.9 else 'NOT met'})")
    print(f"curves: {OUT / 'rlcs_vs_uniform.png'}, {OUT / 'rlcs_vs_uniform.json'}")


def _plot(rlcs, uniform) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*rlcs), marker="o", label="RLCS (curriculum + expansion)")
    ax.plot(*zip(*uniform), marker="s", label="uniform")
    ax.set_xlabel("rollouts")
    ax.set_ylabel("held-out accuracy (mean of domains)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "rlcs_vs_uniform.png", dpi=120)


if __name__ == "__main__":
    main()
