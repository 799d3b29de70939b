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
# Cross-run reuse keyed by the lineage tuple (commit, data hash, image, the stage's config, input
# hashes) is thinkpipe's own content key inside every stage (model_src.stage): each pipeline run
# gets a fresh lineage artifact (it names its MLflow parent run), so KFP's key, which includes
# input artifact identities, only matches within a run, e.g. when KFP retries it.
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
        lineage = init_task.outputs["lineage"]
        curate_task = configure(curate(config_json=config_json, data_dir=data_dir, use_cache=use_cache,
                                       lineage=lineage), "curate")
        pretrain_task = configure(pretrain(config_json=config_json, use_cache=use_cache, lineage=lineage,
                                           pretrain_data=curate_task.outputs["pretrain_data"]), "pretrain")
        sft_task = configure(sft(config_json=config_json, use_cache=use_cache, lineage=lineage,
                                 sft_data=curate_task.outputs["sft_data"],
                                 base_model=pretrain_task.outputs["model"]), "sft")
        rlcs_task = configure(rlcs(config_json=config_json, use_cache=use_cache, lineage=lineage,
                                   rl_data=curate_task.outputs["rl_data"], sft_model=sft_task.outputs["model"]),
                              "rlcs")
        evaluate_task = configure(evaluate(config_json=config_json, use_cache=use_cache, lineage=lineage,
                                           eval_data=curate_task.outputs["eval_data"],
                                           model=rlcs_task.outputs["model"],
                                           pretrain_model=pretrain_task.outputs["model"],
                                           sft_model=sft_task.outputs["model"]), "evaluate")
        export_task = configure(export(config_json=config_json, use_cache=use_cache, lineage=lineage,
                                       model=rlcs_task.outputs["model"],
                                       eval_report=evaluate_task.outputs["report"]), "export")
        return export_task.outputs["exported"]

    return training_pipeline


# the local (kfp.local) DAG; `thinkpipe compile` builds the cluster one from a profile
training_pipeline = build_training_pipeline()
