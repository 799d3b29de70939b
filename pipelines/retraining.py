"""The retraining DAG a schedule runs: check_data -> (data changed) -> the training DAG.

The training DAG ends with the export stage's promotion gate: the champion check_data saw is scored
beside the retrained model on the new eval split, and the retrained one becomes `champion` when it
is non-inferior there (model_src/eval/promotion.py). When the data pin is the
champion's, the run ends after the check, with the reason in its output and in MLflow. A run that
fails is posted to the failure webhook (`cluster.failure_webhook_secret`, model_src/notify.py).
"""

from kfp import dsl

from components.check_data import check_data
from components.finish import notify_failure
from components.image import BASE_IMAGE
from model_src.config import ClusterConfig
from pipelines.cluster import apply_cluster_settings, apply_exit_handler_settings
from pipelines.training import build_training_pipeline

RETRAINING_PIPELINE_NAME = "thinkpipe-retraining"


def build_retraining_pipeline(cluster: ClusterConfig | None = None, kfp_caching: bool = True):
    training = build_training_pipeline(cluster, kfp_caching)

    @dsl.pipeline(name=RETRAINING_PIPELINE_NAME,
                  description="Retrain when the DVC data pin changed since the champion; promote only if better")
    def retraining_pipeline(
        config_json: str,
        data_repo: str,
        data_branch: str = "main",
        data_root: str = "/checkpoints/data",
        git_commit: str = "",
        image: str = BASE_IMAGE,
        pipeline_run_name: str = "",
        use_cache: bool = True,
    ):
        # a scheduled run that fails tells someone, whichever step failed (the training DAG's own
        # exit handler posts a training failure; this one what failed before it, once)
        notify = notify_failure(config_json=config_json)
        notify.set_caching_options(False)
        if cluster is not None:
            apply_exit_handler_settings(notify, cluster)
        with dsl.ExitHandler(notify, name="retraining"):
            check = check_data(config_json=config_json, data_repo=data_repo, data_branch=data_branch,
                               data_root=data_root, pipeline_run_name=pipeline_run_name)
            check.set_caching_options(False)  # the answer depends on the registry and the branch, not the inputs
            if cluster is not None:
                apply_cluster_settings(check, "init", cluster)  # a small pod, like init
            with dsl.If(check.outputs["retrain"] == True, name="data-changed"):  # noqa: E712 - a KFP condition
                training(config_json=config_json, data_dir=check.outputs["data_dir"], git_commit=git_commit,
                         data_hash=check.outputs["data_hash"], data_rev=check.outputs["data_rev"], image=image,
                         pipeline_run_name=pipeline_run_name, use_cache=use_cache,
                         champion_version=check.outputs["champion_version"])

    return retraining_pipeline
