from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(lineage: str, use_cache: bool, champion_version: str, eval_data: Input[Dataset], model: Input[Model],
             pretrain_model: Input[Model], sft_model: Input[Model], report: Output[Artifact], metrics: Output[Metrics]):
    """Accuracy per domain on the held-out split, for the final model and (on fewer samples) the
    pretrained and SFT checkpoints; the champion (`champion_version`, "" for none) on the same prompts."""
    from model_src.stages import evaluate as stage
    from model_src.stages.runner import to_kfp_metrics

    to_kfp_metrics(metrics, stage.run(lineage=lineage, eval_data=eval_data.path, model=model.path, report_out=report.path,
                                      pretrain_model=pretrain_model.path, sft_model=sft_model.path,
                                      champion_version=champion_version, use_cache=use_cache))
