from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def sft(lineage: str, use_cache: bool, sft_data: Input[Dataset], base_model: Input[Model], model: Output[Model],
        metrics: Output[Metrics]):
    """Long-CoT supervised fine-tuning (cold start)."""
    from model_src.stages import sft as stage
    from model_src.stages.runner import to_kfp_metrics

    to_kfp_metrics(metrics, stage.run(lineage=lineage, sft_data=sft_data.path, base_model=base_model.path,
                                      model_out=model.path, use_cache=use_cache))
