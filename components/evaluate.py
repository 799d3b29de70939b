from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(config_json: str, use_cache: bool, git_commit: str, data_hash: str, data_rev: str, image: str,
             eval_data: Input[Dataset], model: Input[Model], pretrain_model: Input[Model], sft_model: Input[Model],
             report: Output[Artifact], metrics: Output[Metrics]):
    """Accuracy per domain on the held-out split, for the final model and (on fewer samples) the
    pretrained and SFT checkpoints."""
    from model_src.lineage import lineage_file
    from model_src.stages import evaluate_stage

    lineage = lineage_file(config_json, git_commit, data_hash, data_rev, image)
    for name, value in evaluate_stage(config_json=config_json, lineage_path=lineage,
                                      eval_data=eval_data.path, model=model.path, report_out=report.path,
                                      pretrain_model=pretrain_model.path, sft_model=sft_model.path,
                                      use_cache=use_cache).items():
        metrics.log_metric(name, value)
