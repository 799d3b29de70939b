"""Retraining that promotes, end to end on the tiny profile: a first run becomes champion; new data
with new eval rows arrives; each later run scores the champion beside its own model on the new
eval split, prompt by prompt, and the gate decides on the paired figures.

A tiny model cannot train a better one in a test's time, so the per-prompt rewards are injected at
the evaluation boundary ($THINKPIPE_FAULT_EVAL_REWARDS): the test checks the wiring (the champion
decoded from the registry on today's prompts, its version an input of evaluate and export) and
the decision, not the training. Four tiny DAG runs (about four minutes): `make test-slow`."""

from __future__ import annotations

import json
import subprocess

import pytest

from model_src.names import COMPARED_WITH_TAG, PROMOTION_FIGURE_PREFIX, PROMOTION_TAG
from tests.conftest import ROOT, THINKPIPE, TinyPipeline

NAME = "thinkpipe-glm4v-tiny"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def retraining(tmp_path_factory):
    """A store whose champion (version 1) trained on the project's data, and a new corpus pinned by DVC."""
    root = tmp_path_factory.mktemp("retrain-promotion")
    pipeline = TinyPipeline(root / "state")
    first = pipeline.run("first")
    assert first.returncode == 0, first.output[-5000:]
    project = root / "project"
    proc = subprocess.run([*THINKPIPE, "data", "--seed", "4321", "--out", str(project / "raw")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dvc = str(ROOT / ".venv" / "bin" / "dvc")
    for command in (["init", "--no-scm", "-q"], ["add", "raw", "-q"]):
        proc = subprocess.run([dvc, *command], cwd=project, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    return pipeline, project, root


def rewards_file(path, challenger: float, champion: float) -> dict[str, str]:
    path.write_text(json.dumps({"challenger": {"*": challenger}, "champion": {"*": champion}}))
    return {"THINKPIPE_FAULT_EVAL_REWARDS": str(path)}


def version_tags(pipeline: TinyPipeline, version: str) -> dict[str, str]:
    return pipeline.client().get_model_version(NAME, version).tags


def test_retraining_on_new_data_scores_the_champion_and_promotes_only_a_non_inferior_model(retraining):
    pipeline, project, root = retraining
    new_data = ("--data-dir", str(project / "raw"), "--data-pin", str(project / "raw.dvc"))
    client = pipeline.client()
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

    worse = pipeline.run("worse", *new_data, env=rewards_file(root / "worse.json", 0.0, 1.0))
    assert worse.returncode == 0, worse.output[-5000:]
    assert "the champion is thinkpipe-glm4v-tiny version 1" in worse.output
    assert "version 2 stays candidate" in worse.output and "not shown non-inferior on new data" in worse.output
    tags = version_tags(pipeline, "2")
    assert tags[COMPARED_WITH_TAG] == "1" and tags[f"{PROMOTION_FIGURE_PREFIX}rule"] == "non-inferior"
    assert float(tags[f"{PROMOTION_FIGURE_PREFIX}gain"]) == -1.0
    assert float(tags[f"{PROMOTION_FIGURE_PREFIX}champion_mean"]) == 1.0
    # the champion's curate run listed its training images: the new eval rows it saw are counted (and left out)
    assert float(tags[f"{PROMOTION_FIGURE_PREFIX}champion_trained_on"]) >= 0
    assert tags[PROMOTION_TAG].startswith("candidate: challenger 0.0000 vs champion 1.0000")
    card = client.get_model_version(NAME, "2").description
    assert "paired gain" in card and "95% CI" in card
    lineage = subprocess.run([*THINKPIPE, "lineage", f"{NAME}/2", "--tracking-uri", pipeline.tracking_uri], cwd=ROOT,
                             capture_output=True, text=True)
    assert lineage.returncode == 0, lineage.stderr[-2000:]
    assert "rule non-inferior: champion 1.000 -> this 0.000, paired gain -1.000" in lineage.stdout
    assert "prompts: champion 1.000 [" in lineage.stdout  # per domain, with the 95% Wilson intervals
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

    # a better model (another SFT learning rate: new weights), whose export fails after its work and
    # before its last act: the promotion never happens, the champion stays where it was
    better = ("--set", "sft.lr=0.0022", *new_data)
    env = rewards_file(root / "better.json", 1.0, 0.0)
    failed = pipeline.run("better", *better, env={**env, "THINKPIPE_FAULT_AFTER_WORK": "export"})
    assert failed.returncode != 0 and "before its last act" in failed.output, failed.output[-3000:]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert PROMOTION_TAG not in version_tags(pipeline, "3")  # registered, never decided

    again = pipeline.run("better-again", *better, env=env)
    assert again.returncode == 0, again.output[-5000:]
    assert "version 3 holds these weights but was never decided on" in again.output
    assert "version 3 is the new champion" in again.output and "non-inferior on new data" in again.output
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3"
    tags = version_tags(pipeline, "3")
    assert tags[COMPARED_WITH_TAG] == "1" and float(tags[f"{PROMOTION_FIGURE_PREFIX}gain"]) == 1.0
    assert float(tags[f"{PROMOTION_FIGURE_PREFIX}prompts/digits"]) > 0
