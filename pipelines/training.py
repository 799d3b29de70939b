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
from model_src.config import ClusterConfig
from pipelines.cluster import apply_cluster_settings

PIPELINE_NAME = "thinkpipe-training"

# KFP caching: on for the deterministic stages, off for the two with outside effects (init opens
# the pipeline's MLflow run; export registers a model version, moves aliases, uploads to S3).
# A stage's KFP cache key is its inputs: the lineage tuple (commit, data hash and rev, image),
# the config and the upstream artifacts, so a re-run with nothing changed reuses its outputs;
# inside each stage thinkpipe's own content key (model_src.stage) does the same for local runs.
CACHED_STAGES = {"init": False, "curate": True, "pretrain": True, "sft": True, "rlcs": True,
                 "evaluate": True, "export": False}


def build_training_pipeline(cluster: ClusterConfig | None = None):
    """The DAG; with `cluster`, every task carries that profile's Kubernetes settings."""

    def configure(task, stage: str):
        task.set_caching_options(CACHED_STAGES[stage])
        if cluster is not None:
            apply_cluster_settings(task, stage, cluster)
        return task

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
        init_task = configure(init(config_json=config_json, data_dir=data_dir, git_commit=git_commit,
                                   data_hash=data_hash, data_rev=data_rev, image=image,
                                   pipeline_run_name=pipeline_run_name), "init")
        # the lineage tuple as plain inputs: with the config and the upstream artifacts it is each
        # stage's KFP cache key; the MLflow parent run is found at run time, not passed in
        lineage = dict(config_json=config_json, use_cache=use_cache, git_commit=git_commit, data_hash=data_hash,
                       data_rev=data_rev, image=image)
        curate_task = configure(curate(data_dir=data_dir, **lineage), "curate").after(init_task)
        pretrain_task = configure(pretrain(pretrain_data=curate_task.outputs["pretrain_data"], **lineage), "pretrain")
        sft_task = configure(sft(sft_data=curate_task.outputs["sft_data"], base_model=pretrain_task.outputs["model"],
                                 **lineage), "sft")
        rlcs_task = configure(rlcs(rl_data=curate_task.outputs["rl_data"], sft_model=sft_task.outputs["model"],
                                   **lineage), "rlcs")
        evaluate_task = configure(evaluate(eval_data=curate_task.outputs["eval_data"], model=rlcs_task.outputs["model"],
                                           pretrain_model=pretrain_task.outputs["model"],
                                           sft_model=sft_task.outputs["model"], **lineage), "evaluate")
        export_task = configure(export(model=rlcs_task.outputs["model"], eval_report=evaluate_task.outputs["report"],
                                       **lineage), "export")
        return export_task.outputs["exported"]

    return training_pipeline


# the local (kfp.local) DAG; `thinkpipe compile` builds the cluster one from a profile
training_pipeline = build_training_pipeline()
