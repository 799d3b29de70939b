from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def curate_plan(lineage: str, data_dir: str) -> List[dict]:
    """Schema-check the raw shards and name the scan parts (at most curate.scan_tasks), one item each."""
    from model_src.stages import curate as stage

    return stage.plan(lineage=lineage, data_dir=data_dir)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def curate_scan(item: dict, data_dir: str, keys: Output[Dataset]):
    """Check and hash one part of the raw shards: the keys the curate stage joins."""
    from model_src.stages import curate as stage

    stage.scan(item=item, data_dir=data_dir, output=keys.path)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def curate(lineage: str, data_dir: str, use_cache: bool, keys: Input[List[Dataset]], pretrain_data: Output[Dataset],
           sft_data: Output[Dataset], rl_data: Output[Dataset], eval_data: Output[Dataset], report: Output[Artifact],
           metrics: Output[Metrics]):
    """Join the scanned keys, quarantine bad rows with a reason, split into the stage datasets."""
    from model_src.stages import curate as stage
    from model_src.stages.runner import to_kfp_metrics

    outputs = {"pretrain": pretrain_data.path, "sft": sft_data.path, "rl": rl_data.path,
               "eval": eval_data.path, "report": report.path}
    to_kfp_metrics(metrics, stage.run(lineage=lineage, data_dir=data_dir, outputs=outputs, use_cache=use_cache,
                                      keys_dirs=[k.path for k in keys]))
