"""What every command group shares: errors, the project folder, the local state and tracking store."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

DEFAULT_STATE_DIR = ".thinkpipe"  # local MLflow store and kfp.local outputs, git-ignored


class CliError(RuntimeError):
    pass


def repo_root() -> Path:
    """The project folder: the nearest parent of the cwd holding `data.dvc`, else the cwd."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "data.dvc").is_file():
            return folder
    return here


def local_image_ref(root: Path) -> str:
    """A local run has no container: name the environment by the hash of its pinned lock file.
    (Avoid the word 'python3' in it: kfp.local rewrites that string in task commands.)"""
    lock = root / "requirements.lock"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16] if lock.is_file() else "unpinned"
    return f"local-venv:py{sys.version_info.major}.{sys.version_info.minor}@lock-sha256:{digest}"


def resolve_tracking_uri(arg: str | None, state_dir: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact root for new experiments, or None to let a server decide).
    A SQLite store keeps its artifacts in a folder beside the database, never in the cwd."""
    from model_src.tracking import local_tracking

    uri = arg or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return local_tracking(state_dir / "mlflow")
    if uri.startswith("sqlite:///"):
        return uri, (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return uri, None


def check_run_name(name: str) -> str:
    """A run name goes into MLflow search filters and KFP names: quotes, backslashes, backticks and
    control characters are refused here, naming the character."""
    bad = next((ch for ch in name if ch in "'\"\\`" or ord(ch) < 32), None)
    if bad is not None or not name.strip():
        raise CliError(f"run name {name!r}: {'empty' if bad is None else f'character {bad!r} is not allowed'} "
                       f"(use letters, digits, spaces and - _ . : + @)")
    return name
