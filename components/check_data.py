from typing import NamedTuple

from kfp import dsl

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_data(config_json: str, data_repo: str, data_branch: str, data_root: str, pipeline_run_name: str) -> NamedTuple(
        "CheckData", retrain=bool, reason=str, data_hash=str, data_rev=str, data_dir=str, champion_version=str):
    """Retrain only if the DVC pin on the branch differs from the champion's training data."""
    from typing import NamedTuple as _NamedTuple

    from model_src.stages import check_data as stage

    result = stage.run(config_json=config_json, data_repo=data_repo, data_branch=data_branch,
                       data_root=data_root, pipeline_run_name=pipeline_run_name)
    outputs = _NamedTuple("CheckData", retrain=bool, reason=str, data_hash=str, data_rev=str, data_dir=str,
                          champion_version=str)
    return outputs(**result)
