"""Two pipeline runs on two data versions: each registered model version leads back to its own
DVC data hash and rev (slow: two tiny DAG runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_src.lineage import dvc_dir_hash, dvc_pin
from tests.conftest import ROOT, THINKPIPE, TINY_MODEL

BIN = Path(sys.executable).parent


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=thinkpipe-test", "-c", "user.email=test@localhost", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout


def _run(cwd: Path, state: Path, name: str) -> None:
    proc = subprocess.run([*THINKPIPE, "run", "--profile", "tiny", "--run-name", name, "--state-dir", str(state),
                           "--tracking-uri", f"sqlite:///{state / 'mlflow.db'}"],
                          cwd=cwd, capture_output=True, text=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]


def _lineage(state: Path, ref: str) -> dict:
    proc = subprocess.run([*THINKPIPE, "lineage", ref, "--json", "--tracking-uri", f"sqlite:///{state / 'mlflow.db'}"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_each_model_version_leads_back_to_its_own_data(tmp_path):
    # a second checkout whose data.dvc pins a corpus from another seed, committed as a new data rev
    other = tmp_path / "other"
    _git(ROOT, "clone", "--quiet", str(ROOT), str(other))
    subprocess.run([*THINKPIPE, "data", "--out", str(other / "data" / "raw"), "--seed", "99"], cwd=other, check=True,
                   capture_output=True)
    subprocess.run([str(BIN / "dvc"), "commit", "--force", "--quiet", "data.dvc"], cwd=other, check=True)
    _git(other, "commit", "--quiet", "-am", "data: corpus from seed 99")
    hash_a, rev_a = dvc_pin(ROOT)
    hash_b, rev_b = dvc_pin(other)
    assert hash_a != hash_b and dvc_dir_hash(other / "data" / "raw") == hash_b

    state = tmp_path / "state"
    _run(ROOT, state, "data-a")
    _run(other, state, "data-b")
    first, second = _lineage(state, f"{TINY_MODEL}/1"), _lineage(state, f"{TINY_MODEL}/2")
    assert (first["lineage"]["data_hash"], first["lineage"]["data_rev"]) == (hash_a, rev_a)
    assert (second["lineage"]["data_hash"], second["lineage"]["data_rev"]) == (hash_b, rev_b)
    assert first["pipeline_run"]["name"] == "data-a" and second["pipeline_run"]["name"] == "data-b"
    # the curated data each model trained on differs too, and its hash is recorded per stage
    curate_a = next(s for s in first["stages"] if s["stage"] == "curate")
    curate_b = next(s for s in second["stages"] if s["stage"] == "curate")
    assert curate_a["outputs"] and curate_a["outputs"] != curate_b["outputs"]
