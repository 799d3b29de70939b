"""RLCS vs uniform sampling from the same SFT checkpoint, same rollout budget, several seeds.

Reports held-out accuracy against rollouts for both, the rollouts RLCS needs to reach uniform's
final accuracy (goal <= 0.6x of uniform's budget), and the effective-group share (groups whose
rollouts did not all score the same, i.e. with a GRPO advantage) with expansion (RLCS) and without
(uniform; goal >= 90% with).

Held-out accuracy is the sampled accuracy: the mean reward of `evaluate.pass_k` samples per eval
prompt at temperature 1 (what RL optimises; `sampled_accuracy_mean` of the evaluate stage). The
greedy accuracy is recorded beside it: at this scale one greedy answer per prompt flips between
near-tied tokens and is too noisy to race on.

Needs a finished `small` pipeline run in the MLflow store (`make run`): it takes that run's SFT
model and its curated eval split (the held-out set).

By default the race starts from the pipeline's own SFT model and uses its curated RL split, on
every domain. The effective-group share is reported two ways: over the groups each update kept
(what expansion raises) and over every group the sampler drew (what it cost to find them). Bands
on the plot are one standard error over seeds; rollouts-to-match comes with the per-seed ratios
(each seed's RLCS curve against the mean uniform final accuracy) and their spread.

`--warmup-steps N --rl-rows M --domains digits` instead first continues the SFT model on freshly
generated rows of `--domains` (once, shared by every run) and races on a fresh RL pool of those
domains (the earlier measurements in RESULTS). Fresh rows come from the domain generators at seeds
of their own, and any whose images equal an eval row's are dropped.

    .venv/bin/python bench/bench_rlcs.py [--domains all] [--budget 4096] [--seeds 0 1 2 3 4] [--jobs 2]
        [--eval-every 1024] [--warmup-steps 1200 --rl-rows 1024 --domains digits] [--set rlcs.lr=1e-4]
"""

from __future__ import annotations

import argparse
import itertools
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


def last_run_model_and_eval(experiment: str, stage: str, domains_arg: str, tmp: Path) -> tuple[Path, list[dict], list[str]]:
    """The newest finished `stage` model, the curated eval rows of `domains_arg` ("all" or a
    comma-separated list) and those domains, from the MLflow store of `make run`."""
    import mlflow

    from model_src.data.schema import read_split
    from pipelines.cli import DEFAULT_STATE_DIR, resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(None, ROOT / DEFAULT_STATE_DIR)[0])
    model = latest_outputs(experiment, stage, "model", tmp / stage)
    eval_rows = read_split(latest_outputs(experiment, "curate", "eval", tmp / "eval"))
    domains = sorted({r["domain"] for r in eval_rows}) if domains_arg == "all" else domains_arg.split(",")
    unknown = sorted(set(domains) - {r["domain"] for r in eval_rows})
    if unknown:
        raise SystemExit(f"--domains: no eval rows of {unknown} in the last run's eval split")
    return model, [r for r in eval_rows if r["domain"] in domains], domains


WARMUP_SEED, RL_POOL_SEED = 7001, 7002  # generator seeds of the fresh rows (the corpus uses its own)


def fresh_rows(domains: list[str], n: int, seed: int, eval_rows: list[dict], tag: str) -> list[dict]:
    """`n` newly generated training rows spread over `domains`, ids prefixed with `tag`; rows whose
    images equal an eval row's are dropped."""
    from model_src.data.curate import content_hash
    from model_src.data.generate import GeneratorConfig, domain_rows

    held_out = {content_hash(row["images"]) for row in eval_rows}
    rows = []
    for i, domain in enumerate(domains):
        share = n // len(domains) + (i < n % len(domains))
        rows += [{**row, "id": f"{tag}-{row['id']}"} for row in domain_rows(GeneratorConfig(seed=seed), domain, "train", share)
                 if content_hash(row["images"]) not in held_out]
    return rows


def warm_up(sft: Path, rows: list[dict], steps: int, seed: int, dest: Path, profile: str = "small") -> Path:
    """Continue SFT of the pipeline's model on `rows` for `steps` steps (`profile`'s SFT settings)."""
    from dataclasses import replace

    from model_src.config import load_config
    from model_src.model.build import load_model_and_processor
    from model_src.model.inputs import sft_example
    from model_src.train.supervised import train_supervised

    cfg = load_config(profile)
    model, processor = load_model_and_processor(str(sft))
    train_cfg = replace(cfg.sft, num_steps=steps, warmup_steps=min(cfg.sft.warmup_steps, steps), checkpoint_every=0)
    summary = train_supervised(model, processor, [sft_example(processor, r) for r in rows], train_cfg, seed,
                               lambda metrics, step: None, desc="warm-up sft")
    print(f"warm-up SFT: {steps} steps on {len(rows)} rows, loss {summary['first_loss']:.3f} -> "
          f"{summary['final_loss']:.3f}, {summary['train_seconds']:.0f} s", flush=True)
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return dest


def one_thread() -> None:
    # the small models are overhead-bound: two single-threaded processes do twice the work of one with two threads
    import torch

    torch.set_num_threads(1)


def run_variant(curriculum: bool, seed: int, args, sft: Path, rl_rows, eval_rows) -> dict:
    from model_src.config import load_config
    from model_src.eval.evaluate import evaluate_model
    from model_src.model.build import load_model_and_processor
    from model_src.rl.loop import train_grpo

    cfg = load_config("small", [f"rlcs.curriculum={str(curriculum).lower()}", "rlcs.num_iterations=100000",
                                f"rlcs.max_rollouts={args.budget}", f"evaluate.max_samples_per_domain={args.eval_samples}",
                                "evaluate.checkpoint_samples_per_domain=0", "evaluate.blind_baseline=false",
                                f"evaluate.pass_k={args.eval_k}", *(args.set or [])])
    model, processor = load_model_and_processor(str(sft))
    greedy: list[tuple[int, float]] = []

    def held_out(rollouts: int) -> tuple[int, float]:
        metrics = evaluate_model(model, processor, eval_rows, cfg.evaluate)[0]
        greedy.append((rollouts, metrics["accuracy_mean"]))
        return rollouts, metrics["sampled_accuracy_mean"]

    curve = [held_out(0)]
    shares: list[float] = []
    sampled_shares: list[float] = []
    next_eval = [args.eval_every]

    def log(metrics: dict, step: int) -> None:
        shares.append(metrics["effective_group_share"])
        sampled_shares.append(metrics["sampled_effective_group_share"])
        if metrics["rollouts_total"] >= next_eval[0] or metrics["rollouts_total"] >= args.budget:
            curve.append(held_out(int(metrics["rollouts_total"])))
            next_eval[0] += args.eval_every

    started = time.monotonic()
    summary, _ = train_grpo(model, processor, rl_rows, cfg.rlcs, seed, log)
    return {"curriculum": curriculum, "seed": seed, "curve": curve, "greedy_curve": greedy,
            "effective_group_share": statistics.fmean(shares), "iterations": len(shares),
            "sampled_effective_group_share": statistics.fmean(sampled_shares),
            "expansion_cap_hits": summary["expansion_cap_hits"], "seconds": round(time.monotonic() - started)}


def rollouts_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """Rollouts at which `curve` first reaches `target`, interpolated linearly between evaluations.

    >>> rollouts_to_reach([(0, 0.1), (1000, 0.2), (2000, 0.4)], 0.3)
    1500.0
    >>> rollouts_to_reach([(0, 0.5), (1000, 0.25)], 0.4)  # already there at the start
    0.0
    >>> rollouts_to_reach([(0, 0.1), (1000, 0.2)], 0.3) is None
    True
    """
    if curve and curve[0][1] >= target:
        return float(curve[0][0])
    for (n0, a0), (n1, a1) in itertools.pairwise(curve):
        if a1 >= target:  # here a0 < target <= a1
            return round(n0 + (n1 - n0) * (target - a0) / (a1 - a0), 6)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="thinkpipe")
    parser.add_argument("--domains", default="all", help="comma-separated domains to race on, or 'all'")
    parser.add_argument("--warmup-steps", type=int, default=0,
                        help="SFT steps on fresh rows of --domains before the race (0: the pipeline's SFT model as is)")
    parser.add_argument("--warmup-rows", type=int, default=3000, help="fresh rows for the warm-up SFT")
    parser.add_argument("--rl-rows", type=int, default=0,
                        help="fresh RL prompts of --domains (0: the pipeline's curated RL split)")
    parser.add_argument("--budget", type=int, default=4096, help="rollouts per RL run")
    parser.add_argument("--eval-every", type=int, default=1024, help="rollouts between held-out evaluations")
    parser.add_argument("--eval-samples", type=int, default=96, help="held-out prompts per domain (at most)")
    parser.add_argument("--eval-k", type=int, default=4, help="samples per held-out prompt")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2, help="RL runs at once (one thread each)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override for both variants")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from model_src.data.schema import read_split

    tmp = Path(tempfile.mkdtemp(prefix="bench-rlcs-"))
    sft, eval_rows, domains = last_run_model_and_eval(args.experiment, "sft", args.domains, tmp)
    started = time.monotonic()
    if args.warmup_steps:
        rows = fresh_rows(domains, args.warmup_rows, WARMUP_SEED, eval_rows, "warmup")
        sft = warm_up(sft, rows, args.warmup_steps, WARMUP_SEED, tmp / "warm-sft")
    if args.rl_rows:
        rl_rows = fresh_rows(domains, args.rl_rows, RL_POOL_SEED, eval_rows, "rl")
    else:
        rl_rows = [r for r in read_split(latest_outputs(args.experiment, "curate", "rl", tmp / "rl")) if r["domain"] in domains]
    print(f"domains {domains}: {len(rl_rows)} RL prompts, {len(eval_rows)} eval rows", flush=True)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=one_thread) as pool:
        results = list(pool.map(run_variant, *zip(*[(c, s, args, sft, rl_rows, eval_rows)
                                                    for s in args.seeds for c in (True, False)])))

    def mean_curve(curriculum: bool) -> list[tuple[int, float]]:
        """Mean over seeds at each evaluation point (rollouts averaged too: batches differ in size)."""
        curves = [r["curve"] for r in results if r["curriculum"] is curriculum]
        points = min(len(c) for c in curves)
        return [(round(statistics.fmean(c[i][0] for c in curves)), statistics.fmean(c[i][1] for c in curves))
                for i in range(points)]

    def band(curriculum: bool) -> list[float]:
        """Standard error over seeds at each evaluation point."""
        curves = [r["curve"] for r in results if r["curriculum"] is curriculum]
        points = min(len(c) for c in curves)
        return [statistics.stdev(c[i][1] for c in curves) / len(curves) ** 0.5 if len(curves) > 1 else 0.0
                for i in range(points)]

    rlcs, uniform = mean_curve(True), mean_curve(False)
    start, target = uniform[0][1], uniform[-1][1]
    needed = rollouts_to_reach(rlcs, target)
    # each seed's RLCS curve against the mean uniform final: how much the ratio moves from seed to seed
    per_seed = [rollouts_to_reach(r["curve"], target) for r in results if r["curriculum"]]
    share = {c: statistics.fmean(r["effective_group_share"] for r in results if r["curriculum"] is c) for c in (True, False)}
    sampled_share = {c: statistics.fmean(r["sampled_effective_group_share"] for r in results if r["curriculum"] is c)
                     for c in (True, False)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rlcs_vs_uniform.json").write_text(json.dumps({"results": results, "rlcs": rlcs, "uniform": uniform,
                                                          "rlcs_se": band(True), "uniform_se": band(False)}, indent=2))
    _plot(rlcs, uniform, band(True), band(False))
    print(f"seeds {args.seeds}, budget {args.budget} rollouts each, {time.monotonic() - started:.0f} s in all")
    for r in results:
        print(f"  seed {r['seed']} {'rlcs   ' if r['curriculum'] else 'uniform'}: {r['iterations']} iterations, "
              f"{r['seconds']} s, " + (f"expansion cap hit {r['expansion_cap_hits']:.0f}x" if r["curriculum"] else "no expansion")
              + ", sampled accuracy "
              f"{r['curve'][0][1]:.3f} -> {r['curve'][-1][1]:.3f}, greedy {r['greedy_curve'][0][1]:.3f} -> "
              f"{r['greedy_curve'][-1][1]:.3f}")
    print("held-out sampled accuracy vs rollouts (mean over seeds):")
    for (n, a), (m, b) in zip(rlcs, uniform):
        print(f"  rlcs {a:.3f} at {n:>5} rollouts   uniform {b:.3f} at {m:>5} rollouts")
    if target <= start:
        print(f"uniform's final accuracy {target:.3f} is not above the SFT start {start:.3f}: no RL gain to race "
              f"to, so the rollouts-to-match ratio is not informative here (goal <= 0.6x: not measurable)")
    elif needed is None:
        print(f"RLCS did not reach uniform's final accuracy {target:.3f} within the budget (goal <= 0.6x: NOT met)")
    else:
        ratio = needed / uniform[-1][0]
        print(f"rollouts to reach uniform's final accuracy {target:.3f}: rlcs {needed:.0f} vs uniform {uniform[-1][0]} "
              f"= {ratio:.2f}x (goal <= 0.6x: {'met' if ratio <= 0.6 else 'NOT met'})")
    ratios = [f"{n / uniform[-1][0]:.2f}x" if n is not None else "not reached" for n in per_seed]
    print(f"  per seed (each RLCS seed against uniform's mean final accuracy): {', '.join(ratios)}")
    se = band(False)[-1]
    print(f"  uniform's final accuracy itself is uncertain by +-{se:.3f} (1 SE over seeds); RLCS's final is "
          f"{rlcs[-1][1]:.3f} +- {band(True)[-1]:.3f}")
    print(f"effective-group share over the groups each update kept: with expansion {share[True]:.1%}, without "
          f"{share[False]:.1%} (goal >= 90% with: {'met' if share[True] >= 0.9 else 'NOT met'})")
    print(f"effective-group share over every group drawn: with expansion {sampled_share[True]:.1%}, without "
          f"{sampled_share[False]:.1%}")
    print(f"curves: {OUT / 'rlcs_vs_uniform.png'}, {OUT / 'rlcs_vs_uniform.json'}")


def _plot(rlcs, uniform, rlcs_se, uniform_se) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for curve, se, marker, label in ((rlcs, rlcs_se, "o", "RLCS (curriculum + expansion)"), (uniform, uniform_se, "s", "uniform")):
        x, y = zip(*curve)
        line, = ax.plot(x, y, marker=marker, label=label)
        ax.fill_between(x, [a - e for a, e in zip(y, se)], [a + e for a, e in zip(y, se)], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("rollouts")
    ax.set_ylabel("held-out sampled accuracy")
    ax.set_title("mean over seeds; bands: 1 SE over seeds", fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "rlcs_vs_uniform.png", dpi=120)


if __name__ == "__main__":
    main()
