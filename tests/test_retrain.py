"""Scheduled retraining's decision on real DVC revisions of a real git repository, against the
champion in a real MLflow registry; the data for a changed pin is pulled with DVC and verified."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest
import yaml

from model_src.config import load_config
from model_src.lineage import dvc_dir_hash
from model_src.retrain import DataVersion, check_data, clone_repo, data_version_at, materialize_data
from model_src.stages import check_data as check_data_stage
from tests.conftest import TINY_MODEL

DVC = [sys.executable, "-m", "dvc"]


def sh(cwd, *cmd):
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)


def commit_data(repo, text: str, message: str) -> DataVersion:
    """Write the corpus, pin it in data.dvc (as the project does), push it and commit."""
    (repo / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (repo / "data" / "raw" / "rows.txt").write_text(text)
    if (repo / "data.dvc").exists():  # re-pin, as `make data` does
        sh(repo, *DVC, "commit", "--quiet", "--force", "data.dvc")
    else:
        sh(repo, *DVC, "add", "--quiet", "data/raw")
        pin = yaml.safe_load((repo / "data" / "raw.dvc").read_text())
        pin["outs"][0]["path"] = "data/raw"
        (repo / "data.dvc").write_text(yaml.safe_dump(pin))
        (repo / "data" / "raw.dvc").unlink()
    sh(repo, *DVC, "push", "--quiet", "data.dvc")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "--quiet", "-m", message)
    return data_version_at(repo)


@pytest.fixture()
def project(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    sh(repo, "git", "init", "--quiet", "-b", "main")
    sh(repo, "git", "config", "user.email", "ci@thinkpipe.invalid")
    sh(repo, "git", "config", "user.name", "ci")
    sh(repo, *DVC, "init", "--quiet")
    sh(repo, *DVC, "config", "core.analytics", "false")
    sh(repo, *DVC, "remote", "add", "--default", "store", str(tmp_path / "dvc-remote"))
    (repo / ".gitignore").write_text("/data/raw\n")
    return repo


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def register_champion(client, name: str, version: DataVersion) -> str:
    """A version as the export stage registers it: lineage tags, `champion` alias."""
    client.create_registered_model(name)
    mv = client.create_model_version(name, "file:///models/m", tags={
        "thinkpipe.data_hash": version.data_hash, "thinkpipe.data_rev": version.data_rev})
    client.set_registered_model_alias(name, "champion", mv.version)
    return mv.version


def test_retrain_decision_follows_the_data_pin(project, registry):
    first = commit_data(project, "digit,7\n", "data v1")
    assert first.data_hash == dvc_dir_hash(project / "data" / "raw") and len(first.data_rev) == 40

    no_champion = check_data(project, "model-a")
    assert no_champion.retrain and no_champion.reason.startswith("no champion yet")

    version = register_champion(registry, "model-a", first)
    same = check_data(project, "model-a")
    assert not same.retrain
    assert same.reason == (f"data unchanged: champion version {version} was trained on {first.data_hash}, "
                           f"which is still the latest pin (rev {first.data_rev})")

    (project / "README.md").write_text("code change only\n")  # a commit that does not touch the pin
    sh(project, "git", "add", "README.md")
    sh(project, "git", "commit", "--quiet", "-m", "docs")
    assert not check_data(project, "model-a").retrain
    assert data_version_at(project) == first

    second = commit_data(project, "digit,7\ndigit,3\n", "data v2")
    changed = check_data(project, "model-a")
    assert changed.retrain and changed.latest == second and changed.champion == first
    assert first.data_hash in changed.reason and second.data_hash in changed.reason
    assert not check_data(project, "model-a", rev="HEAD~2").retrain  # an older rev still pins v1


def test_changed_data_is_pulled_from_the_dvc_remote_and_verified(project, registry, tmp_path):
    first = commit_data(project, "digit,7\n", "data v1")
    register_champion(registry, TINY_MODEL, first)
    second = commit_data(project, "digit,7\ndigit,3\n", "data v2")
    config_json = load_config("tiny").to_json()

    result = check_data_stage.run(config_json=config_json, data_repo=str(project), data_branch="main",
                              data_root=str(tmp_path / "pvc" / "data"), pipeline_run_name="nightly-check")
    assert result["retrain"] is True and result["data_hash"] == second.data_hash
    assert (tmp_path / "pvc" / "data" / second.data_hash.removesuffix(".dir") / "rows.txt").read_text() == "digit,7\ndigit,3\n"
    assert dvc_dir_hash(result["data_dir"]) == second.data_hash

    checks = registry.search_runs([registry.get_experiment_by_name("thinkpipe-tiny").experiment_id],
                                  "tags.`thinkpipe.stage` = 'retrain-check'")
    assert [(r.info.run_name, r.data.tags["thinkpipe.retrain"]) for r in checks] == [("nightly-check", "true")]

    # a clone whose DVC pin disagrees with the pushed data is refused, naming both hashes
    clone = clone_repo(project, "main", tmp_path / "clone")
    bad = DataVersion("0" * 32 + ".dir", second.data_rev)
    with pytest.raises(Exception, match=bad.data_hash):
        materialize_data(clone, bad, tmp_path / "pvc2")


def test_a_cluster_pulls_changed_data_from_the_remote_its_profile_names(project, registry, tmp_path, monkeypatch):
    """The repository's default remote is a local path no pod has (as the project's `local`); the
    cluster profile names the S3 remote (`cluster.dvc_remote`, `s3` in glm4v-9b), and the retraining
    DAG's data check pulls from it: here from an S3 stand-in on 127.0.0.1. A remote the repository
    does not define fails naming it."""
    from tests.s3_server import s3_server

    sh(project, *DVC, "remote", "add", "s3", "s3://retrain-test-data/dvc")  # its own bucket: moto keeps one store a process
    sh(project, *DVC, "remote", "modify", "store", "url", str(tmp_path / "not-in-the-pod"))  # the default
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "--quiet", "-m", "remotes")
    assert load_config("glm4v-9b").cluster.dvc_remote == "s3"
    with s3_server("retrain-test-data") as (s3_env, s3):
        for key, value in s3_env.items():
            monkeypatch.setenv(key, value)
        (project / "data" / "raw").mkdir(parents=True)
        (project / "data" / "raw" / "rows.txt").write_text("digit,4\n")
        sh(project, *DVC, "add", "--quiet", "data/raw")
        pin = yaml.safe_load((project / "data" / "raw.dvc").read_text())
        pin["outs"][0]["path"] = "data/raw"
        (project / "data.dvc").write_text(yaml.safe_dump(pin))
        (project / "data" / "raw.dvc").unlink()
        sh(project, *DVC, "push", "--quiet", "-r", "s3", "data.dvc")  # only S3 holds the data
        sh(project, "git", "add", "-A")
        sh(project, "git", "commit", "--quiet", "-m", "data on s3")
        latest = data_version_at(project)
        assert s3.list_objects_v2(Bucket="retrain-test-data", Prefix="dvc")["KeyCount"] >= 2

        on_cluster = load_config("tiny", ["cluster.dvc_remote=s3"]).to_json()
        result = check_data_stage.run(config_json=on_cluster, data_repo=str(project), data_branch="main",
                                      data_root=str(tmp_path / "pvc"), pipeline_run_name="cluster-check")
        assert result["retrain"] is True and dvc_dir_hash(result["data_dir"]) == latest.data_hash

        unnamed = load_config("tiny", ["cluster.dvc_remote=minio"]).to_json()
        with pytest.raises(Exception, match=r"DVC remote 'minio' \(cluster.dvc_remote\) is not defined in .*: its "
                                            r"remotes are s3, store"):
            check_data_stage.run(config_json=unnamed, data_repo=str(project), data_branch="main",
                                 data_root=str(tmp_path / "pvc2"))
