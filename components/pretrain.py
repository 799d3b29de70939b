from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def pretrain(config_json: str, use_cache: bool, git_commit: str, data_hash: str, data_rev: str, image: str,
             pretrain_data: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """Tokenizer + Glm4v from the profile, trained to caption images."""
    from model_src.lineage import lineage_file
    from model_src.stages import pretrain_stage

    lineage = lineage_file(config_json, git_commit, data_hash, data_rev, image)
    for name, value in pretrain_stage(config_json=config_json, lineage_path=lineage,
                                      pretrain_data=pretrain_data.path, model_out=model.path,
                                      use_cache=use_cache).items():
        metrics.log_metric(name, value)
