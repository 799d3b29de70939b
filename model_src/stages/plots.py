"""The curves a stage logs to MLflow as PNGs, for people who would rather look than read."""

from __future__ import annotations

from model_src.stages.runner import StageContext


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_curve(ctx: StageContext, metric: str = "loss") -> None:
    """The stage run's `metric` over its steps as plots/<metric>.png."""
    import mlflow

    history = mlflow.MlflowClient().get_metric_history(ctx.run_id, metric)
    if not history:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([m.step for m in history], [m.value for m in history])
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{ctx.stage}: {metric}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    mlflow.log_figure(fig, f"plots/{metric}.png")
    plt.close(fig)


def tier_histogram(history: list[dict]) -> None:
    """The curriculum monitor: prompts per difficulty tier after each RL iteration."""
    import mlflow

    if not history:
        return
    plt = _pyplot()
    tiers = list(zip(*(h["tiers"] for h in history)))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.stackplot(range(1, len(history) + 1), tiers, labels=[f"tier {t}" for t in range(len(tiers))])
    ax.set_xlabel("iteration")
    ax.set_ylabel("prompts")
    ax.set_title("rlcs: difficulty tiers (0 = easiest)")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/tier_histogram.png")
    plt.close(fig)
