from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def export(config_json: str, use_cache: bool, git_commit: str, data_hash: str, data_rev: str, image: str,
           model: Input[Model], eval_report: Input[Artifact], exported: Output[Model], metrics: Output[Metrics]):
    """HF folder + model card, registered in the MLflow model registry; closes the parent run."""
    from model_src.lineage import lineage_file
    from model_src.stages import export_stage

    lineage = lineage_file(config_json, git_commit, data_hash, data_rev, image)
    for name, value in export_stage(config_json=config_json, lineage_path=lineage, model=model.path,
                                    eval_report=eval_report.path, export_out=exported.path,
                                    use_cache=use_cache).items():
        metrics.log_metric(name, value)
