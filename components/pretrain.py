from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def pretrain(lineage: str, use_cache: bool, pretrain_data: Input[Dataset], model: Output[Model],
             metrics: Output[Metrics]):
    """Tokenizer + Glm4v from the profile, trained to caption images."""
    from model_src.stages import pretrain as stage
    from model_src.stages.runner import to_kfp_metrics

    to_kfp_metrics(metrics, stage.run(lineage=lineage, pretrain_data=pretrain_data.path, model_out=model.path,
                                      use_cache=use_cache))
