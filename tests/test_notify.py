"""Failure notices (model_src/notify.py): the retraining DAG's exit handler posts a failure the
training DAG's own handler did not, once; a webhook that does not answer does not fail the
handler; on a cluster only the exit handlers get the webhook's Secret. The training DAG's notice
is checked end to end in tests/test_pipeline_e2e.py (a tiny run failing at SFT)."""

from __future__ import annotations

import mlflow
import pytest
import yaml

from model_src.names import PIPELINE_RUN_TAG, PIPELINE_STAGE, STAGE_TAG
from model_src.notify import NOTIFIED_TAG, Failure, post_failure
from model_src.stages import finish
from tests.webhook_server import WebhookServer


@pytest.fixture()
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("THINKPIPE_PIPELINE_RUN", "nightly-7")
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def _config_json() -> str:
    from model_src.config import load_config

    return load_config("tiny", ["experiment=notify-test"]).to_json()


def test_retraining_exit_handler_posts_a_failure_before_training_once(store, monkeypatch):
    with WebhookServer() as hook:
        monkeypatch.setenv("THINKPIPE_FAILURE_WEBHOOK", hook.url + "/hook")
        # the data check failed: the training DAG never opened its run
        assert finish.notify_run(config_json=_config_json(), pipeline_state="FAILED",
                                 error="Task check-data failed.") == "FAILED"
        [(_, notice)] = hook.posts
        assert notice["pipeline"] == "thinkpipe-retraining" and notice["pipeline_run"] == "nightly-7"
        assert notice["cause"].startswith("Task check-data failed. (before the training DAG opened its MLflow run")
        assert notice["mlflow_run"].startswith("experiment ")
        # a training failure the training DAG's finish already posted is not posted again
        experiment = store.get_experiment_by_name("notify-test").experiment_id
        parent = store.create_run(experiment, tags={PIPELINE_RUN_TAG: "nightly-7", STAGE_TAG: PIPELINE_STAGE,
                                                    NOTIFIED_TAG: "yes"})
        finish.notify_run(config_json=_config_json(), pipeline_state="FAILED", error="Task exit-handler-1 failed.")
        assert len(hook.posts) == 1
        # ... but one it could not deliver is
        store.set_tag(parent.info.run_id, NOTIFIED_TAG, "no: webhook did not answer")
        finish.notify_run(config_json=_config_json(), pipeline_state="FAILED", error="Task exit-handler-1 failed.")
        assert len(hook.posts) == 2 and hook.posts[1][1]["mlflow_run"] == f"run {parent.info.run_id}"
        finish.notify_run(config_json=_config_json(), pipeline_state="SUCCEEDED")
        assert len(hook.posts) == 2  # success is not news


def test_a_webhook_that_does_not_answer_is_reported_not_raised():
    failure = Failure("thinkpipe-training", "nightly-7", "sft: boom", ["sft"], "run abc")
    with WebhookServer(status=500) as hook:
        problem = post_failure(failure, hook.url + "/services/SECRET")
    assert problem.startswith("webhook at 127.0.0.1 did not take the failure notice: 500") and "SECRET" not in problem
    from model_src.train.distributed import free_port

    assert "did not take" in post_failure(failure, f"http://127.0.0.1:{free_port()}/x", timeout_s=2)


def test_only_the_exit_handlers_get_the_webhook_secret():
    from pipelines.compile import COMPILED_DIR  # the committed IR (tests/test_compile_and_tracking.py: up to date)

    for pipeline, handlers in (("training", {"exec-finish"}), ("retraining", {"exec-finish", "exec-notify-failure"})):
        docs = list(yaml.safe_load_all((COMPILED_DIR / f"{pipeline}.yaml").read_text()))
        executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        with_hook = {name for name, k8s in executors.items() for env in k8s.get("secretAsEnv", [])
                     if any(m["envVar"] == "THINKPIPE_FAILURE_WEBHOOK" for m in env["keyToEnv"])}
        assert with_hook == handlers, (pipeline, with_hook)
        for handler in handlers:
            [source] = [env for env in executors[handler]["secretAsEnv"]
                        if env["keyToEnv"][0]["envVar"] == "THINKPIPE_FAILURE_WEBHOOK"]
            assert source["secretName"] == "thinkpipe-alerts" and source["keyToEnv"][0]["secretKey"] == "url"
