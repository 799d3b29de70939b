"""The training DAG: init -> curate -> pretrain -> sft -> rlcs -> evaluate -> export, then finish.

Curate fans out first: curate-plan names the scan parts, one curate-scan task a part runs in a
`dsl.ParallelFor`, and `dsl.Collected` hands every part's keys to the curate stage.

Stages pass typed KFP artifacts (Dataset, Model, Metrics) and one lineage value that init makes.
The same function runs under `kfp.local` (`thinkpipe run`) and compiles to the IR YAML a cluster
runs (`thinkpipe compile`). KFP's caching is set per stage from the registry
(model_src/stages/registry.py): a stage whose inputs (the lineage value and the upstream
artifacts) are unchanged is reused without starting. `finish` is the exit handler: it runs after
the stages whether they succeeded or failed and closes the pipeline's MLflow parent run.
"""

from kfp import dsl

from components.curate import curate, curate_plan, curate_scan
from components.evaluate import evaluate
from components.export import export
from components.finish import finish
from components.image import BASE_IMAGE
from components.init import init
from components.pretrain import pretrain
from components.rlcs import rlcs
from components.sft import sft
from model_src.config import ClusterConfig
from model_src.stages.registry import stage as registry_stage
from pipelines.cluster import apply_cluster_settings, apply_exit_handler_settings

PIPELINE_NAME = "thinkpipe-training"


def build_training_pipeline(cluster: ClusterConfig | None = None, kfp_caching: bool = True):
    """The DAG; with `cluster`, every task carries that profile's Kubernetes settings. KFP caches a
    task as the registry says, or none at all with `kfp_caching=False` (`submit --no-cache`: KFP's
    caching lives in the IR, per task, so a run without it needs an IR without it)."""

    def configure(task, stage: str):
        # a stage's fan-out tasks (curate-scan) take its caching and its cluster settings
        task.set_caching_options(stage != "finish" and kfp_caching and registry_stage(stage).kfp_caching)
        if cluster is not None:
            (apply_exit_handler_settings(task, cluster) if stage == "finish" else
             apply_cluster_settings(task, stage, cluster))
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
        champion_version: str = "",
    ):
        # champion_version: the registry's `champion` when the run starts ("" none); evaluate scores it
        # beside the new model, and as an input of evaluate and export it keeps KFP's cache from
        # reusing a comparison with a champion that has changed since
        finish_task = configure(finish(config_json=config_json), "finish")  # a small pod, like init
        with dsl.ExitHandler(finish_task, name="stages"):
            init_task = configure(init(config_json=config_json, data_dir=data_dir, git_commit=git_commit,
                                       data_hash=data_hash, data_rev=data_rev, image=image,
                                       pipeline_run_name=pipeline_run_name), "init")
            # the lineage value and the upstream artifacts are each stage's KFP cache key; the MLflow
            # parent run is found at run time from the pipeline run's identity, not passed in
            common = dict(lineage=init_task.output, use_cache=use_cache)
            plan_task = configure(curate_plan(lineage=init_task.output, data_dir=data_dir), "curate")
            # one item a part (kfp.local 2.17 cannot loop over one of several named outputs)
            with dsl.ParallelFor(plan_task.output) as item:
                scan_task = configure(curate_scan(item=item, data_dir=data_dir), "curate")
            curate_task = configure(curate(data_dir=data_dir, keys=dsl.Collected(scan_task.outputs["keys"]), **common),
                                    "curate")
            pretrain_task = configure(pretrain(pretrain_data=curate_task.outputs["pretrain_data"], **common), "pretrain")
            sft_task = configure(sft(sft_data=curate_task.outputs["sft_data"], base_model=pretrain_task.outputs["model"],
                                     **common), "sft")
            rlcs_task = configure(rlcs(rl_data=curate_task.outputs["rl_data"], sft_model=sft_task.outputs["model"],
                                       **common), "rlcs")
            evaluate_task = configure(evaluate(eval_data=curate_task.outputs["eval_data"],
                                               model=rlcs_task.outputs["model"],
                                               pretrain_model=pretrain_task.outputs["model"],
                                               sft_model=sft_task.outputs["model"],
                                               champion_version=champion_version, **common), "evaluate")
            configure(export(model=rlcs_task.outputs["model"], eval_report=evaluate_task.outputs["report"],
                             champion_version=champion_version, **common), "export")
        # KFP returns no pipeline output from inside an exit handler: the exported folder is the
        # export run's `outputs/exported` artifact in MLflow (what `thinkpipe run` prints)

    return training_pipeline


# the local (kfp.local) DAG; `thinkpipe compile` builds the cluster one from a profile
training_pipeline = build_training_pipeline()
