"""Two `thinkpipe run` started together on a fresh default store, as a user would: both finish, and
each keeps its own lineage (its own parent run, its stages nested under it, its own registered
version), with one champion and kfp.local's shared cache intact."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.conftest import ROOT, THINKPIPE, TINY_EXPERIMENT, TINY_MODEL

STAGES = {"init", "curate-plan", "curate", "pretrain", "sft", "rlcs", "evaluate", "export"}


@pytest.mark.slow  # two tiny DAG runs side by side: minutes
def test_two_runs_at_once_on_a_fresh_default_store_keep_their_own_lineage(tmp_path):
    import mlflow

    state = tmp_path / "state"  # no --tracking-uri and no --run-name: the defaults two users would hit
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    runs = [subprocess.Popen([*THINKPIPE, "run", "--profile", "tiny", "--set", f"seed={seed}", "--state-dir", str(state)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for seed in (11, 12)]
    outputs = [run.communicate(timeout=1800)[0] for run in runs]
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-4000:]
    versions = [re.search(rf"registered model : {TINY_MODEL} version (\d+)", out).group(1) for out in outputs]
    parents = [re.search(r"MLflow parent run (\w+)", out).group(1) for out in outputs]
    assert len(set(versions)) == 2 and len(set(parents)) == 2, (versions, parents)

    client = mlflow.MlflowClient(f"sqlite:///{state / 'mlflow' / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name == TINY_EXPERIMENT]  # created once
    everything = client.search_runs([experiment.experiment_id])
    assert not [r.info.run_id for r in everything if r.info.status != "FINISHED"]  # none left RUNNING
    config_hashes = set()
    for parent_id, version in zip(parents, versions):
        parent = client.get_run(parent_id)
        assert parent.info.status == "FINISHED"
        config_hashes.add(parent.data.tags["thinkpipe.config_hash"])
        children = [r for r in everything if r.data.tags.get("mlflow.parentRunId") == parent_id]
        assert {r.data.tags["thinkpipe.stage"] for r in children} >= STAGES - {"curate-plan"}
        assert {r.data.tags["thinkpipe.pipeline_run"] for r in children} == {parent.data.tags["thinkpipe.pipeline_run"]}
        assert {r.data.tags["thinkpipe.config_hash"] for r in children} == {parent.data.tags["thinkpipe.config_hash"]}
        assert client.get_model_version(TINY_MODEL, version).run_id in {r.info.run_id for r in children}
    assert len(config_hashes) == 2  # each run's stages carry its own config (its seed)
    champion = client.get_model_version_by_alias(TINY_MODEL, "champion")
    assert str(champion.version) in versions
    cache = state / "kfp" / ".kfp_cache"
    entries = list(cache.glob("*.json"))
    assert entries and all(json.loads(p.read_text()) is not None for p in entries)  # every entry whole
    assert not list(cache.glob(".kfp_cache_*.tmp"))
