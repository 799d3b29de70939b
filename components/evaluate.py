from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(config_json: str, use_cache: bool, lineage: Input[Artifact], eval_data: Input[Dataset],
             model: Input[Model], report: Output[Artifact], metrics: Output[Metrics]):
    """Greedy accuracy per domain on the held-out split."""
    from model_src.stages import evaluate_stage

    for name, value in evaluate_stage(config_json=config_json, lineage_path=lineage.path,
                                      eval_data=eval_data.path, model=model.path, report_out=report.path,
                                      use_cache=use_cache).items():
        metrics.log_metric(name, value)
