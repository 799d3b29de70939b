"""MLflow plumbing: reachability check, experiment set-up, the pipeline's parent run.

The tracking URI comes from `MLFLOW_TRACKING_URI` (read when called, never at import) or is passed
in; the local default is a SQLite store with an artifact folder beside it.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


class TrackingUnavailable(RuntimeError):
    pass


def local_tracking(root: str | Path) -> tuple[str, str]:
    """(tracking URI, artifact root URI) of the embedded default store under `root`."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def check_tracking_uri(uri: str, timeout_s: float = 20.0) -> None:
    """Fail fast, naming the URI, when the tracking store cannot be reached.

    HTTP servers are polled on `/health` until `timeout_s`; SQLite and file stores need a
    writable folder. Anything else is tried with a cheap MLflow call.
    """
    if uri.startswith(("http://", "https://")):
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as resp:
                    if resp.status == 200:
                        return
                    last_error = RuntimeError(f"HTTP {resp.status}")
            except (urllib.error.URLError, OSError) as exc:
                last_error = exc
            time.sleep(1.0)
        raise TrackingUnavailable(f"MLflow tracking server {uri} is not reachable ({last_error}); "
                                  f"start it or pass another --tracking-uri")
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
    elif uri.startswith("file:"):
        folder = Path(urllib.parse.urlparse(uri).path)
    else:
        folder = None
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingUnavailable(f"MLflow tracking store {uri}: cannot create {folder} ({exc})") from exc
        if not os.access(folder, os.W_OK):
            raise TrackingUnavailable(f"MLflow tracking store {uri}: {folder} is not writable")
        return
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means "unreachable"
        raise TrackingUnavailable(f"MLflow tracking store {uri} is not usable: {exc}") from exc


def ensure_experiment(name: str, artifact_location: str | None = None) -> str:
    """Experiment id for `name`, creating it (with an absolute artifact root) when missing."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def local_artifact_path(artifact_uri: str) -> Path | None:
    """The folder an artifact URI names when the store is local (read it in place), else None
    (a remote store: download it).

    >>> local_artifact_path("file:///state/mlflow/artifacts/1/abc/artifacts/outputs/exported%20x")
    PosixPath('/state/mlflow/artifacts/1/abc/artifacts/outputs/exported x')
    >>> local_artifact_path("s3://bucket/1/abc/artifacts") is None
    True
    """
    if artifact_uri.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(artifact_uri).path))
    if artifact_uri.startswith("/"):
        return Path(artifact_uri)
    return None


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_terminated(run_id, status=status)
