from kfp import dsl
from kfp.dsl import Artifact, Dataset, Metrics, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def curate(config_json: str, data_dir: str, use_cache: bool, git_commit: str, data_hash: str, data_rev: str,
           image: str, pretrain_data: Output[Dataset], sft_data: Output[Dataset], rl_data: Output[Dataset],
           eval_data: Output[Dataset], report: Output[Artifact], metrics: Output[Metrics]):
    """Check every raw row, quarantine bad ones with a reason, split into the stage datasets."""
    from model_src.lineage import lineage_file
    from model_src.stages import curate_stage

    outputs = {"pretrain": pretrain_data.path, "sft": sft_data.path, "rl": rl_data.path,
               "eval": eval_data.path, "report": report.path}
    lineage = lineage_file(config_json, git_commit, data_hash, data_rev, image)
    for name, value in curate_stage(config_json=config_json, lineage_path=lineage, data_dir=data_dir,
                                    outputs=outputs, use_cache=use_cache).items():
        metrics.log_metric(name, value)
