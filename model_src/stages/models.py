"""Model folders in and out of a stage: load, save, and log as MLflow LoggedModels."""

from __future__ import annotations

from pathlib import Path

from model_src.names import STAGE_TAG, STEP_TAG
from model_src.stages.runner import StageContext


def save_model(model, processor, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def load_model(folder: str | Path, policy=None):
    """(model, processor) of an HF-format folder a stage wrote; on `policy`'s device when given."""
    from model_src.model.build import load_model_and_processor

    model, processor = load_model_and_processor(str(folder))
    return (policy.place(model) if policy is not None else model), processor


def device_policy(ctx: StageContext):
    """Where and in what precision this stage computes (model_src/device.py)."""
    from model_src.device import DevicePolicy

    return DevicePolicy.resolve(ctx.cfg.model.precision)


def log_model_folder(ctx: StageContext, name: str, folder: str | Path, tags: dict[str, str],
                     metrics: dict[str, float] | None = None, step: int | None = None):
    """`folder` as a READY MLflow LoggedModel of the stage run (with `metrics` at `step`)."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    logged = mlflow.initialize_logged_model(name=name, source_run_id=ctx.run_id, tags=tags,
                                            experiment_id=ctx.scope.experiment_id)
    mlflow.MlflowClient().log_model_artifacts(logged.model_id, str(folder))
    if metrics:
        mlflow.log_metrics(metrics, step=step, model_id=logged.model_id)
    mlflow.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged


def checkpoint_logger(ctx: StageContext, model, processor):
    """`on_checkpoint` for the training loop: each checkpoint's weights become an MLflow
    LoggedModel of the stage run (name `<stage>-step-<N>`: the weights after N steps), so a
    reviewer can pick up any intermediate model after the local checkpoint files are gone. Its
    metric is the loss of the step that made it, at that step's index (N - 1): logging with a
    model id writes into the run's history too, where it must repeat that step's entry, not add
    a wrong point at step N."""

    def log_checkpoint(step: int, loss: float) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            save_model(model, processor, tmp)
            log_model_folder(ctx, f"{ctx.stage}-step-{step}", tmp,
                             {STAGE_TAG: ctx.stage, STEP_TAG: str(step)}, {"loss": loss}, step - 1)

    return log_checkpoint
