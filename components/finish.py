from kfp import dsl

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def finish(config_json: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """The exit handler: close the MLflow parent run (FAILED if any task failed), record reused stages."""
    from model_src.stages import finish as stage

    return stage.run(config_json=config_json, pipeline_state=status.state, error=status.error_message or "")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def notify_failure(config_json: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """The retraining DAG's exit handler: post a failure the training DAG's own handler did not."""
    from model_src.stages import finish as stage

    return stage.notify_run(config_json=config_json, pipeline_state=status.state, error=status.error_message or "")
