"""One holder at a time, across processes and pods: what promotion needs, since MLflow cannot
compare-and-set an alias (two exports that each read "no champion" would each set one), and what a
stage's content key needs (one live run does a stage's work; model_src/stages/runner.py).

- On a cluster (the pod knows its namespace: `THINKPIPE_NAMESPACE`): a Kubernetes Lease
  (coordination.k8s.io/v1). It is taken by creating it and renewed every third of `duration_s`
  while held; a Lease whose holder stopped renewing for `duration_s` (its pod died) is taken over
  by a replace carrying the resourceVersion read, so of two pods racing for an expired one the API
  server lets exactly one through (409 for the other).
- Elsewhere: an exclusive `flock` on a file under the thinkpipe cache folder.

    with exclusive("promote-thinkpipe-glm4v", holder=run_id):
        ...read the champion, decide, set the aliases...
"""

from __future__ import annotations

import os
import re
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from model_src.names import CACHE_ENV, NAMESPACE_ENV


class LockTimeout(RuntimeError):
    pass


def _lock_name(name: str) -> str:
    """A DNS-1123 name for a Lease (and a safe file name)."""
    return ("thinkpipe-" + re.sub(r"[^a-z0-9-]+", "-", name.lower())).strip("-")[:63].rstrip("-")


@contextmanager
def file_lock(path: Path, timeout_s: float = 600.0, poll_s: float = 0.2):
    """An exclusive flock on `path`, waited for up to `timeout_s`."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"{path}: still locked after {timeout_s:.0f} s") from None
                if not waiting:
                    print(f"waiting for {path}, held by another run", flush=True)
                    waiting = True
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@contextmanager
def lease_lock(name: str, namespace: str, holder: str, duration_s: int = 120, timeout_s: float = 600.0,
               poll_s: float = 1.0, api=None):
    """Hold the Lease `name` in `namespace` while inside (see the module docstring)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from model_src.cluster.training_job import kubernetes_api_client

    api = api or client.CoordinationV1Api(kubernetes_api_client())

    def body(resource_version: str | None = None):
        now = _now()
        return client.V1Lease(api_version="coordination.k8s.io/v1", kind="Lease",
                              metadata=client.V1ObjectMeta(name=name, resource_version=resource_version),
                              spec=client.V1LeaseSpec(holder_identity=holder, lease_duration_seconds=duration_s,
                                                      acquire_time=now, renew_time=now))

    deadline = time.monotonic() + timeout_s
    waiting = False
    while True:
        try:
            api.create_namespaced_lease(namespace, body())
            break
        except ApiException as exc:
            if exc.status != 409:
                raise
        try:  # held: take it over only when its holder stopped renewing it
            current = api.read_namespaced_lease(name, namespace)
            spec = current.spec
            renewed = spec.renew_time or spec.acquire_time
            if renewed is None or renewed + timedelta(seconds=spec.lease_duration_seconds or duration_s) < _now():
                api.replace_namespaced_lease(name, namespace, body(current.metadata.resource_version))
                break
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone meanwhile, or another pod took it first: try again
                raise
        if time.monotonic() > deadline:
            raise LockTimeout(f"Lease {namespace}/{name} still held after {timeout_s:.0f} s")
        if not waiting:
            print(f"waiting for Lease {namespace}/{name}, held by another run", flush=True)
            waiting = True
        time.sleep(poll_s)
    stop = threading.Event()

    def renew() -> None:  # a held Lease is renewed, so nobody takes over a live holder
        while not stop.wait(duration_s / 3):
            try:
                current = api.read_namespaced_lease(name, namespace)
                current.spec.renew_time = _now()
                api.replace_namespaced_lease(name, namespace, current)
            except ApiException as exc:
                print(f"warning: could not renew Lease {namespace}/{name}: {exc.status} {exc.reason}", flush=True)

    renewer = threading.Thread(target=renew, daemon=True, name=f"renew-{name}")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(10)
        try:
            api.delete_namespaced_lease(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise


@contextmanager
def exclusive(name: str, holder: str, timeout_s: float = 600.0):
    """A Lease on a cluster, a file lock elsewhere (see the module docstring)."""
    namespace = os.environ.get(NAMESPACE_ENV)
    if namespace:
        with lease_lock(_lock_name(name), namespace, holder, timeout_s=timeout_s):
            yield
    else:
        folder = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "thinkpipe") / "locks"
        with file_lock(folder / f"{_lock_name(name)}.lock", timeout_s=timeout_s):
            yield
