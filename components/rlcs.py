from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def rlcs(lineage: str, use_cache: bool, rl_data: Input[Dataset], sft_model: Input[Model], model: Output[Model],
         metrics: Output[Metrics]):
    """Reinforcement learning with curriculum sampling (GRPO)."""
    from model_src.stages import rlcs as stage
    from model_src.stages.runner import to_kfp_metrics

    to_kfp_metrics(metrics, stage.run(lineage=lineage, rl_data=rl_data.path, sft_model=sft_model.path,
                                      model_out=model.path, use_cache=use_cache))
