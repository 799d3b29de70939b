from kfp import dsl

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def init(config_json: str, data_dir: str, git_commit: str, data_hash: str, data_rev: str, image: str,
         pipeline_run_name: str) -> str:
    """Check the data pin, open the MLflow parent run; returns the lineage value every stage takes."""
    from model_src.stages import init as stage

    lineage, _scope = stage.run(config_json=config_json, data_dir=data_dir, git_commit=git_commit,
                                data_hash=data_hash, data_rev=data_rev, image=image,
                                pipeline_run_name=pipeline_run_name)
    return lineage.to_json()
