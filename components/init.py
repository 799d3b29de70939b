from kfp import dsl
from kfp.dsl import Artifact, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def init(config_json: str, data_dir: str, git_commit: str, data_hash: str, data_rev: str, image: str,
         pipeline_run_name: str, lineage: Output[Artifact]):
    """Resolve the lineage, check the data pin, open the MLflow parent run."""
    from model_src.stages import init_stage

    result = init_stage(config_json=config_json, data_dir=data_dir, git_commit=git_commit, data_hash=data_hash,
                        data_rev=data_rev, image=image, pipeline_run_name=pipeline_run_name,
                        lineage_out=lineage.path)
    lineage.metadata["parent_run_id"] = result.parent_run_id
    lineage.metadata["data_hash"] = result.data_hash
