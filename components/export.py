from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def export(lineage: str, use_cache: bool, champion_version: str, model: Input[Model], eval_report: Input[Artifact],
           exported: Output[Model], metrics: Output[Metrics]):
    """HF folder + model card, registered in the MLflow model registry behind the promotion gate.
    `champion_version` is only part of the task's KFP cache key: a changed champion re-runs export."""
    from model_src.stages import export as stage
    from model_src.stages.runner import to_kfp_metrics

    to_kfp_metrics(metrics, stage.run(lineage=lineage, model=model.path, eval_report=eval_report.path,
                                      export_out=exported.path, use_cache=use_cache))
