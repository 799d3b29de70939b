"""Lineage: the tuple that says what produced a run, and the cache key derived from it.

Every MLflow run carries the same tags (DESIGN.md rule 4):

    thinkpipe.git_commit    code commit; `<sha>+dirty.<diffhash>` for an uncommitted tree
    thinkpipe.data_hash     the DVC hash of data/raw that `data.dvc` pins (e.g. `3f2a...9c.dir`)
    thinkpipe.data_rev      the git commit that last changed `data.dvc`
    thinkpipe.config_hash   sha256 of the resolved config
    thinkpipe.image         the container image reference the stage ran in
    thinkpipe.cache_key     the stage's content key (see `stage_cache_key`)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

TAG_PREFIX = "thinkpipe."
# Which pipeline run a stage belongs to: set by `thinkpipe run` for its kfp.local subprocesses and,
# on a cluster, from the pod's Argo workflow label (pipelines/cluster.py). It is not a stage input,
# so KFP's cache key (a stage's inputs) stays the lineage tuple and the upstream artifacts.
PIPELINE_RUN_ENV = "THINKPIPE_PIPELINE_RUN"


class LineageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Lineage:
    git_commit: str
    data_hash: str
    data_rev: str
    config_hash: str
    image: str
    parent_run_id: str = ""
    experiment_id: str = ""
    pipeline_run_name: str = ""

    def tags(self) -> dict[str, str]:
        return {
            f"{TAG_PREFIX}git_commit": self.git_commit,
            f"{TAG_PREFIX}data_hash": self.data_hash,
            f"{TAG_PREFIX}data_rev": self.data_rev,
            f"{TAG_PREFIX}config_hash": self.config_hash,
            f"{TAG_PREFIX}image": self.image,
            f"{TAG_PREFIX}pipeline_run": self.pipeline_run_name,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Lineage":
        return cls(**json.loads(text))


def lineage_file(config_json: str, git_commit: str, data_hash: str, data_rev: str, image: str) -> str:
    """Write a stage's lineage tuple (no parent run yet: `run_stage` finds it) to a temporary
    file and return its path; what a component passes to its stage."""
    import tempfile

    from model_src.config import config_from_json, config_hash

    lineage = Lineage(git_commit=git_commit or "unknown", data_hash=data_hash or "unknown",
                      data_rev=data_rev or "unknown", config_hash=config_hash(config_from_json(config_json)), image=image)
    with tempfile.NamedTemporaryFile("w", suffix="-lineage.json", delete=False) as f:
        f.write(lineage.to_json())
    return f.name


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


def dvc_pin(repo: str | Path, dvc_file: str = "data.dvc") -> tuple[str, str]:
    """(data_hash, data_rev) from the committed DVC pin file."""
    repo = Path(repo)
    path = repo / dvc_file
    if not path.is_file():
        raise LineageError(f"{path} not found: run `make data` (or `dvc add data/raw`) first")
    data_hash = pin_md5(path.read_text(), str(path))
    rev = git_output(repo, "log", "-1", "--format=%H", "--", dvc_file)
    if not rev or git_output(repo, "status", "--porcelain", "--", dvc_file):
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
