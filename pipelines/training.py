"""The training DAG: init -> curate -> pretrain -> sft -> rlcs -> evaluate -> export.

Stages pass typed KFP artifacts (Dataset, Model, Metrics). The same function runs under
`kfp.local` (`thinkpipe run`) and compiles to the IR YAML a cluster runs (`thinkpipe compile`).
"""

from kfp import dsl
from kfp.dsl import Model

from components.curate import curate
from components.evaluate import evaluate
from components.export import export
from components.image import BASE_IMAGE
from components.init import init
from components.pretrain import pretrain
from components.rlcs import rlcs
from components.sft import sft

PIPELINE_NAME = "thinkpipe-training"


@dsl.pipeline(name=PIPELINE_NAME, description="GLM-4.1V-Thinking recipe: curate, pretrain, SFT, RLCS, evaluate, export")
def training_pipeline(
    config_json: str,
    data_dir: str,
    git_commit: str = "",
    data_hash: str = "",
    data_rev: str = "",
    image: str = BASE_IMAGE,
    pipeline_run_name: str = "",
    use_cache: bool = True,
) -> Model:
    init_task = init(config_json=config_json, data_dir=data_dir, git_commit=git_commit, data_hash=data_hash,
                     data_rev=data_rev, image=image, pipeline_run_name=pipeline_run_name)
    init_task.set_caching_options(False)  # opens a new MLflow parent run every time
    lineage = init_task.outputs["lineage"]
    curate_task = curate(config_json=config_json, data_dir=data_dir, use_cache=use_cache, lineage=lineage)
    pretrain_task = pretrain(config_json=config_json, use_cache=use_cache, lineage=lineage,
                             pretrain_data=curate_task.outputs["pretrain_data"])
    sft_task = sft(config_json=config_json, use_cache=use_cache, lineage=lineage,
                   sft_data=curate_task.outputs["sft_data"], base_model=pretrain_task.outputs["model"])
    rlcs_task = rlcs(config_json=config_json, use_cache=use_cache, lineage=lineage,
                     rl_data=curate_task.outputs["rl_data"], sft_model=sft_task.outputs["model"])
    evaluate_task = evaluate(config_json=config_json, use_cache=use_cache, lineage=lineage,
                             eval_data=curate_task.outputs["eval_data"], model=rlcs_task.outputs["model"],
                             pretrain_model=pretrain_task.outputs["model"], sft_model=sft_task.outputs["model"])
    export_task = export(config_json=config_json, use_cache=use_cache, lineage=lineage,
                         model=rlcs_task.outputs["model"], eval_report=evaluate_task.outputs["report"])
    return export_task.outputs["exported"]
