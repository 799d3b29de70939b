from kfp import dsl
from kfp.dsl import Artifact, Dataset, Metrics, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def curate(lineage: str, data_dir: str, use_cache: bool, pretrain_data: Output[Dataset], sft_data: Output[Dataset],
           rl_data: Output[Dataset], eval_data: Output[Dataset], report: Output[Artifact], metrics: Output[Metrics]):
    """Check every raw row, quarantine bad ones with a reason, split into the stage datasets."""
    from model_src.stages import curate as stage
    from model_src.stages.runner import to_kfp_metrics

    outputs = {"pretrain": pretrain_data.path, "sft": sft_data.path, "rl": rl_data.path,
               "eval": eval_data.path, "report": report.path}
    to_kfp_metrics(metrics, stage.run(lineage=lineage, data_dir=data_dir, outputs=outputs, use_cache=use_cache))
