"""Lineage: the value that says what produced a run, and the cache key derived from it.

One `Lineage` value (commit, DVC data hash and rev, image, resolved config) is made by the `init`
stage and handed to every later stage as a single KFP input, so it is part of every stage's KFP
cache key. What belongs to one pipeline run only (its id and MLflow parent run) is a `RunScope`,
found at run time from the pipeline run's identity, never a stage input: otherwise no cache key
would ever match again. Every MLflow run carries the lineage tags (model_src/names.py):

    thinkpipe.git_commit    code commit; `<sha>+dirty.<diffhash>` for an uncommitted tree
    thinkpipe.data_hash     the DVC hash of data/raw that `data.dvc` pins (e.g. `3f2a...9c.dir`)
    thinkpipe.data_rev      the git commit that last changed `data.dvc`
    thinkpipe.config_hash   sha256 of the resolved config
    thinkpipe.image         the container image reference the stage ran in
    thinkpipe.pipeline_run  the pipeline run (unique) the run belongs to
    thinkpipe.cache_key     the stage's content key (see `stage_cache_key`)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path

import yaml

from model_src.names import (CONFIG_HASH_TAG, DATA_HASH_TAG, DATA_REV_TAG, GIT_COMMIT_TAG, IMAGE_TAG,
                             PIPELINE_RUN_ENV, PIPELINE_RUN_TAG, TAG_PREFIX)

__all__ = ["TAG_PREFIX", "PIPELINE_RUN_ENV", "Lineage", "RunScope", "LineageError"]


class LineageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Lineage:
    """What produced a run. The same value for every stage of a pipeline run, and for every
    pipeline run with the same code, data, image and config."""

    git_commit: str
    data_hash: str
    data_rev: str
    image: str
    config_json: str  # the resolved config, canonical JSON (PipelineConfig.to_json)

    @classmethod
    def make(cls, *, config_json: str, git_commit: str, data_hash: str, data_rev: str, image: str) -> "Lineage":
        """Validate the config and write it canonically, so equal configs give equal values."""
        from model_src.config import config_from_json

        return cls(git_commit=git_commit or "unknown", data_hash=data_hash or "unknown",
                   data_rev=data_rev or "unknown", image=image, config_json=config_from_json(config_json).to_json())

    @cached_property
    def config(self):
        """The validated PipelineConfig."""
        from model_src.config import config_from_json

        return config_from_json(self.config_json)

    @property
    def config_hash(self) -> str:
        from model_src.config import config_hash

        return config_hash(self.config)

    def tags(self) -> dict[str, str]:
        return {GIT_COMMIT_TAG: self.git_commit, DATA_HASH_TAG: self.data_hash, DATA_REV_TAG: self.data_rev,
                CONFIG_HASH_TAG: self.config_hash, IMAGE_TAG: self.image}

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Lineage":
        try:
            data = json.loads(text)
            return cls(**{f.name: data[f.name] for f in fields(cls)})
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise LineageError(f"not a lineage value ({exc}); init makes it: {text[:200]!r}") from exc


@dataclass(frozen=True)
class RunScope:
    """The pipeline run a stage belongs to: its unique id and its MLflow parent run."""

    pipeline_run: str
    parent_run_id: str
    experiment_id: str

    def tags(self) -> dict[str, str]:
        return {PIPELINE_RUN_TAG: self.pipeline_run}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunScope":
        return cls(**json.loads(text))


def git_output(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LineageError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout.strip()


def git_commit(repo: str | Path) -> str:
    """HEAD's sha, with a hash of the uncommitted diff of tracked files when the tree is dirty,
    so that a cache key changes with code even before it is committed."""
    repo = Path(repo)
    sha = git_output(repo, "rev-parse", "HEAD")
    diff = git_output(repo, "diff", "HEAD", "--no-ext-diff", "--binary")
    if diff:
        return f"{sha}+dirty.{hashlib.sha256(diff.encode()).hexdigest()[:12]}"
    return sha


def pin_md5(text: str, where: str) -> str:
    """The `outs[0].md5` of a .dvc file's text; `where` names it in the error."""
    try:
        return yaml.safe_load(text)["outs"][0]["md5"]
    except (yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise LineageError(f"{where}: cannot read outs[0].md5 ({exc})") from exc


def dvc_pin(repo: str | Path, dvc_file: str | Path = "data.dvc") -> tuple[str, str]:
    """(data_hash, data_rev) from the DVC pin file (`dvc_file` relative to `repo`, or anywhere:
    a pin outside the repository has no git revision, and says so)."""
    repo = Path(repo)
    path = repo / dvc_file
    if not path.is_file():
        raise LineageError(f"{path} not found: run `make data` (or `dvc add data/raw`) first")
    data_hash = pin_md5(path.read_text(), str(path))
    if not path.resolve().is_relative_to(repo.resolve()):
        return data_hash, "outside-repository"
    rev = git_output(repo, "log", "-1", "--format=%H", "--", str(dvc_file))
    if not rev or git_output(repo, "status", "--porcelain", "--", str(dvc_file)):
        rev = "uncommitted"
    return data_hash, rev


def dvc_dir_hash(path: str | Path) -> str:
    """DVC's own content hash of a folder (the `md5` that `dvc add` writes into the .dvc file)."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    import tempfile

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as tmp:
        odb = HashFileDB(fs, tmp)
        _, _, obj = build(odb, str(Path(path).resolve()), fs, "md5", dry_run=True)
    return obj.hash_info.value


def hash_path(path: str | Path) -> str:
    """sha256 over a file, or over a folder's sorted relative paths and file bytes."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def stage_cache_key(stage: str, lineage: Lineage, stage_config_hash: str, input_hashes: dict[str, str]) -> str:
    """Content key of a stage: the lineage tuple, the config the stage reads, and its inputs.

    Changing code (commit), data (DVC hash), image, the stage's config sections or any upstream
    artifact changes the key; changing a config section the stage does not read does not.
    """
    material = {
        "stage": stage,
        "git_commit": lineage.git_commit,
        "data_hash": lineage.data_hash,
        "image": lineage.image,
        "stage_config_hash": stage_config_hash,
        "inputs": dict(sorted(input_hashes.items())),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
