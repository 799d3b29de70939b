from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def rlcs(config_json: str, use_cache: bool, git_commit: str, data_hash: str, data_rev: str, image: str,
         rl_data: Input[Dataset], sft_model: Input[Model], model: Output[Model], metrics: Output[Metrics]):
    """Reinforcement learning with curriculum sampling (GRPO)."""
    from model_src.lineage import lineage_file
    from model_src.stages import rlcs_stage

    lineage = lineage_file(config_json, git_commit, data_hash, data_rev, image)
    for name, value in rlcs_stage(config_json=config_json, lineage_path=lineage, rl_data=rl_data.path,
                                  sft_model=sft_model.path, model_out=model.path,
                                  use_cache=use_cache).items():
        metrics.log_metric(name, value)
