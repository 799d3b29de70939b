"""The project's named DVC S3 remote works against any S3-compatible store: push, a wiped cache
and workspace, pull, and the pinned hash comes back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from model_src.lineage import dvc_dir_hash, dvc_pin
from tests.conftest import ROOT
from tests.s3_server import s3_server

DVC = str(Path(sys.executable).parent / "dvc")


def _dvc(cwd: Path, env: dict, *args: str) -> str:
    proc = subprocess.run([DVC, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_project_config_names_the_s3_remote_without_credentials():
    from dvc.config import Config

    remote = Config(dvc_dir=str(ROOT / ".dvc")).load_one("repo")["remote"]["s3"]
    assert remote["url"].startswith("s3://")
    assert not {"access_key_id", "secret_access_key", "session_token", "credentialpath"} & set(remote)


def test_push_wipe_pull_through_the_s3_remote_returns_the_pinned_hash(tmp_path):
    pinned, _ = dvc_pin(ROOT)
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    shutil.copy(ROOT / "data.dvc", repo / "data.dvc")
    shutil.copytree(ROOT / "data" / "raw", repo / "data" / "raw")
    bucket, prefix = "thinkpipe-data", "dvc"
    with s3_server(bucket) as (s3_env, client):
        env = {**os.environ, **s3_env}
        _dvc(repo, env, "commit", "--force", "--quiet", "data.dvc")  # fills this repo's cache
        assert yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"] == pinned
        _dvc(repo, env, "push", "-r", "s3", "data.dvc")
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
        nfiles = len(list((ROOT / "data" / "raw").glob("*")))
        assert len(keys) == nfiles + 1 and any(k.replace("/", "").endswith(pinned) for k in keys)  # files + .dir

        shutil.rmtree(repo / ".dvc" / "cache")
        shutil.rmtree(repo / "data" / "raw")
        _dvc(repo, env, "pull", "-r", "s3", "data.dvc")
        assert dvc_dir_hash(repo / "data" / "raw") == pinned
