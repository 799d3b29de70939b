"""Scheduled retraining: retrain only when the data changed since the current champion.

The latest data version is the DVC pin (`data.dvc`) on a branch of the project's git repository;
the champion's is the `thinkpipe.data_hash` / `thinkpipe.data_rev` tags its export stage put on
the registered model version. `thinkpipe retrain` (local) and the retraining pipeline's first step
(cluster) both call `check_data`; the promotion gate after training is the export stage's.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from model_src.lineage import LineageError, dvc_dir_hash, git_output, pin_md5
from model_src.names import DATA_HASH_TAG, DATA_REV_TAG, RETRAIN_REASON_TAG, RETRAIN_TAG, STAGE_TAG


@dataclass(frozen=True)
class DataVersion:
    data_hash: str  # DVC's md5 of the pinned folder
    data_rev: str   # git commit that last changed the pin


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    latest: DataVersion
    champion: DataVersion | None = None
    champion_version: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def decide_retrain(latest: DataVersion, champion: DataVersion | None, champion_version: str = "") -> RetrainDecision:
    """Retrain when there is no champion or its data hash differs from the latest pin.

    >>> new = DataVersion("aa11.dir", "c2")
    >>> decide_retrain(new, None).reason
    'no champion yet: train on data aa11.dir (rev c2)'
    >>> decide_retrain(new, DataVersion("aa11.dir", "c1"), "3").retrain
    False
    >>> decide_retrain(new, DataVersion("bb22.dir", "c1"), "3").reason
    'data changed: champion version 3 was trained on bb22.dir (rev c1), the latest pin is aa11.dir (rev c2)'
    """
    if champion is None:
        return RetrainDecision(True, f"no champion yet: train on data {latest.data_hash} (rev {latest.data_rev})", latest)
    if champion.data_hash == latest.data_hash:
        return RetrainDecision(False, f"data unchanged: champion version {champion_version} was trained on "
                                      f"{latest.data_hash}, which is still the latest pin (rev {latest.data_rev})",
                               latest, champion, champion_version)
    return RetrainDecision(True, f"data changed: champion version {champion_version} was trained on "
                                 f"{champion.data_hash} (rev {champion.data_rev}), the latest pin is "
                                 f"{latest.data_hash} (rev {latest.data_rev})", latest, champion, champion_version)


def data_version_at(repo: str | Path, rev: str = "HEAD", dvc_file: str = "data.dvc") -> DataVersion:
    """The DVC pin as committed at `rev` (not the working tree): its md5 and the commit that set it."""
    repo = Path(repo)
    data_hash = pin_md5(git_output(repo, "show", f"{rev}:{dvc_file}"), f"{repo}/{dvc_file} at {rev}")
    return DataVersion(data_hash, git_output(repo, "log", "-1", "--format=%H", rev, "--", dvc_file))


def champion_data_version(model_name: str, client=None) -> tuple[str, DataVersion] | None:
    """(version, data version) of the model's `champion` alias, or None when there is none."""
    import mlflow

    from model_src.model_registry import champion_of

    client = client or mlflow.MlflowClient()
    version = champion_of(client, model_name)  # a registry error is raised, not read as "no champion"
    if version is None:
        return None
    tags = version.tags
    if DATA_HASH_TAG not in tags:
        raise LineageError(f"champion {model_name}/{version.version} has no {DATA_HASH_TAG} tag: "
                           f"it was not registered by thinkpipe's export stage")
    return version.version, DataVersion(tags[DATA_HASH_TAG], tags.get(DATA_REV_TAG, "unknown"))


def check_data(repo: str | Path, model_name: str, rev: str = "HEAD", dvc_file: str = "data.dvc",
               client=None) -> RetrainDecision:
    champion = champion_data_version(model_name, client)
    latest = data_version_at(repo, rev, dvc_file)
    return decide_retrain(latest, None if champion is None else champion[1], "" if champion is None else champion[0])


def clone_repo(url: str, branch: str, dest: str | Path) -> Path:
    """A blob-less clone of `branch` (full commit history, files on demand): enough for `git log`
    on the pin and for `dvc pull`. `url` may be a local path."""
    dest = Path(dest)
    proc = subprocess.run(["git", "clone", "--quiet", "--filter=blob:none", "--branch", branch, "--single-branch",
                           str(url), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LineageError(f"cannot clone {url} (branch {branch}): {proc.stderr.strip()}")
    return dest


def materialize_data(clone: str | Path, version: DataVersion, dest_root: str | Path,
                     dvc_file: str = "data.dvc", remote: str | None = None) -> Path:
    """`dvc pull` the pinned folder in `clone` from `remote` (a name in its .dvc/config; None: its
    default remote) and copy it to `dest_root/<hash>`; checks the hash. An existing, complete copy is
    reused (the folder name is its content hash). A remote the config does not define fails naming it."""
    from dvc.repo import Repo

    dest = Path(dest_root) / version.data_hash.removesuffix(".dir")
    if dest.is_dir() and dvc_dir_hash(dest) == version.data_hash:
        return dest
    clone = Path(clone)
    with Repo(str(clone)) as repo:
        if remote is not None and remote not in repo.config["remote"]:
            raise LineageError(f"DVC remote {remote!r} (cluster.dvc_remote) is not defined in {dvc_config_of(clone)}: "
                               f"its remotes are {', '.join(sorted(repo.config['remote'])) or 'none'}")
        repo.pull(targets=[str(clone / dvc_file)], remote=remote)
    pin = yaml.safe_load((clone / dvc_file).read_text())
    source = clone / Path(dvc_file).parent / pin["outs"][0]["path"]
    actual = dvc_dir_hash(source)
    if actual != version.data_hash:
        raise LineageError(f"pulled {source} hashes to {actual}, but the pin says {version.data_hash}")
    Path(dest_root).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_root) as tmp:  # same filesystem as dest: the rename is atomic
        staged = Path(tmp) / "data"
        shutil.copytree(source, staged)
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    return dest


def dvc_config_of(clone: str | Path) -> str:
    return str(Path(clone) / ".dvc" / "config")


def log_decision(decision: RetrainDecision, experiment_id: str, run_name: str, client=None) -> str:
    """Record the check as a finished MLflow run (stage `retrain-check`), so a schedule's history
    of 'retrained' and 'skipped: data unchanged' is visible beside the training runs."""
    import mlflow

    client = client or mlflow.MlflowClient()
    run = client.create_run(experiment_id, run_name=run_name, tags={
        STAGE_TAG: "retrain-check",
        RETRAIN_TAG: str(decision.retrain).lower(),
        RETRAIN_REASON_TAG: decision.reason,
        DATA_HASH_TAG: decision.latest.data_hash,
        DATA_REV_TAG: decision.latest.data_rev,
    })
    client.log_dict(run.info.run_id, decision.to_dict(), "retrain_decision.json")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
