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


class TrackingLost(TrackingUnavailable):
    """The tracking server stopped answering mid-stage and MLflow's own retries are spent."""


def local_tracking(root: str | Path) -> tuple[str, str]:
    """(tracking URI, artifact root URI) of the embedded default store under `root`."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


DNS_TIMEOUT_S = 5.0


def safe_uri(uri: str) -> str:
    """`uri` with any password in it masked, for messages and logs.

    >>> safe_uri("https://pipeline:s3cret@mlflow.example:5000/"), safe_uri("sqlite:///x.db")
    ('https://pipeline:***@mlflow.example:5000/', 'sqlite:///x.db')
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[1]}"))


def _without_login(uri: str) -> str:
    """`uri` without user and password (urllib cannot open a URL carrying them; /health needs none)."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def _resolves(host: str, timeout_s: float) -> bool:
    """Whether `host` resolves within `timeout_s` (a socket timeout does not bound DNS)."""
    import socket
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(socket.getaddrinfo, host, None).result(timeout=timeout_s)
        return True
    except (FutureTimeout, OSError):
        return False
    finally:
        pool.shutdown(wait=False)


def check_tracking_uri(uri: str, timeout_s: float = 20.0) -> None:
    """Fail fast, naming the URI (its password masked), when the tracking store cannot be used.

    HTTP servers: the host must resolve within DNS_TIMEOUT_S, `/health` is polled until
    `timeout_s`, then one authenticated call tells a refused login (HTTP 401/403: the credentials
    in MLFLOW_TRACKING_USERNAME / PASSWORD) from an unreachable server. SQLite and file stores
    need a writable folder. Anything else is tried with a cheap MLflow call.
    """
    shown = safe_uri(uri)
    if uri.startswith(("http://", "https://")):
        host = urllib.parse.urlsplit(uri).hostname or ""
        if not _resolves(host, DNS_TIMEOUT_S):
            raise TrackingUnavailable(f"MLflow tracking server {shown}: host {host!r} does not resolve "
                                      f"within {DNS_TIMEOUT_S:.0f} s; check the name or pass another --tracking-uri")
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(_without_login(uri).rstrip("/") + "/health", timeout=3) as resp:
                    if resp.status == 200:
                        _check_login(uri, shown)
                        return
                    last_error = RuntimeError(f"HTTP {resp.status}")
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    raise TrackingUnavailable(_refused(shown, exc.code)) from None
                last_error = exc
            except (urllib.error.URLError, OSError) as exc:
                last_error = exc
            time.sleep(1.0)
        raise TrackingUnavailable(f"MLflow tracking server {shown} is not reachable ({last_error}); "
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
            raise TrackingUnavailable(f"MLflow tracking store {shown}: cannot create {folder} ({exc})") from exc
        if not os.access(folder, os.W_OK):
            raise TrackingUnavailable(f"MLflow tracking store {shown}: {folder} is not writable")
        if uri.startswith("sqlite:///"):
            from mlflow.tracking import MlflowClient

            from model_src.cluster.lock import file_lock

            # MLflow creates and migrates a new SQLite store on first open; two runs doing it at
            # once collide ("duplicate column"), so the first open happens under a lock beside it
            with file_lock(folder / f".{Path(uri).name}.init.lock", timeout_s=300):
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        return
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means "unreachable"
        raise TrackingUnavailable(f"MLflow tracking store {shown} is not usable: {type(exc).__name__}") from None


def _refused(shown: str, code: int) -> str:
    return (f"MLflow tracking server {shown} refused the login (HTTP {code}): set MLFLOW_TRACKING_USERNAME and "
            f"MLFLOW_TRACKING_PASSWORD (on a cluster, from the Secret thinkpipe-mlflow-client)")


def _check_login(uri: str, shown: str) -> None:
    """One authenticated API call: a server behind basic auth answers /health to anyone."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except MlflowException as exc:
        status = getattr(exc, "get_http_status_code", lambda: None)()
        if status in (401, 403) or str(getattr(exc, "error_code", "")) in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise TrackingUnavailable(_refused(shown, status or 401)) from None
        raise TrackingUnavailable(f"MLflow tracking server {shown} answers /health but not the API: "
                                  f"{type(exc).__name__}") from None


def ensure_experiment(name: str, artifact_location: str | None = None, tracking_uri: str | None = None) -> str:
    """Experiment id for `name`, creating it (with an absolute artifact root) when missing; two runs
    starting together on a fresh store both get the one experiment."""
    from mlflow.tracking import MlflowClient

    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # another run created it between the lookup and here: use theirs
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


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


# Transient tracking errors are retried by MLflow's HTTP client itself, with exponential backoff:
# refused connections, timeouts and 429/5xx answers, MLFLOW_HTTP_REQUEST_MAX_RETRIES times (default
# 7, about 4 minutes with MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR 2), each request bounded by
# MLFLOW_HTTP_REQUEST_TIMEOUT. thinkpipe keeps that policy (set the variables in `cluster.env` to
# change it) and handles what comes after it: the server is then given up on.
def tracking_gave_up(exc: BaseException) -> bool:
    """Whether `exc` is MLflow giving up on its tracking server after its retries (an MLflow error
    raised from a refused connection, a timeout or too many 429/5xx answers), not a refusal of the
    request itself (a bad parameter, a missing run), which retrying would not change, nor another
    service's connection error (a judge, a rollout server)."""
    import requests
    from mlflow.exceptions import MlflowException

    lost = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError)
    return any(isinstance(link, MlflowException) and any(isinstance(c, lost) for c in _chain(link, skip_first=True))
               for link in _chain(exc))


def _chain(exc: BaseException, skip_first: bool = False) -> list[BaseException]:
    """`exc` and what it was raised from or during, in order (each once)."""
    links: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and all(cause is not seen for seen in links):
        links.append(cause)
        cause = cause.__cause__ or cause.__context__
    return links[1:] if skip_first else links


def stop_retrying() -> None:
    """Once the server is given up on, later MLflow calls of this process (ending the run, MLflow's
    own exit hook) fail at once instead of spending the whole retry budget again."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"


def retry_policy() -> str:
    """MLflow's retry settings in force, for messages."""
    from mlflow.environment_variables import (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_MAX_RETRIES,
                                              MLFLOW_HTTP_REQUEST_TIMEOUT)

    return (f"{MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()} retries, backoff factor {MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()}, "
            f"{MLFLOW_HTTP_REQUEST_TIMEOUT.get()} s per request")
