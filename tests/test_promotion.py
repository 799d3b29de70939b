"""The promotion gate on hand-made metric tables, and what counts as "no champion yet"."""

import pytest

from model_src.eval.promotion import decide_promotion

CHAMPION = {"accuracy_mean": 0.50, "accuracy/digits": 0.80, "accuracy/stem": 0.20}


def test_better_mean_without_domain_drops_is_promoted():
    new = {"accuracy_mean": 0.55, "accuracy/digits": 0.79, "accuracy/stem": 0.31}
    assert decide_promotion(new, CHAMPION, "h", "h", 0.02)[0]


def test_better_mean_with_a_domain_drop_beyond_tolerance_stays_candidate():
    new = {"accuracy_mean": 0.60, "accuracy/digits": 0.70, "accuracy/stem": 0.50}
    promote, reason = decide_promotion(new, CHAMPION, "h", "h", 0.02)
    assert not promote and "accuracy/digits drops by 0.1000" in reason


def test_equal_or_worse_mean_and_other_eval_data_stay_candidate():
    assert not decide_promotion(dict(CHAMPION), CHAMPION, "h", "h", 0.02)[0]
    promote, reason = decide_promotion({**CHAMPION, "accuracy_mean": 0.9}, CHAMPION, "new", "old", 0.02)
    assert not promote and "not comparable" in reason


def test_only_a_missing_model_or_alias_means_no_champion(tmp_path, monkeypatch):
    """A registry that errs (here a loopback stand-in answering 503) fails the lookup with its
    cause; it is never read as "no champion yet", which would promote unconditionally."""
    import json
    from http.server import BaseHTTPRequestHandler

    import mlflow
    from mlflow.exceptions import MlflowException

    from model_src.model_registry import champion_of
    from tests.loopback import LoopbackServer

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert champion_of(client, "never-registered") is None
    client.create_registered_model("no-alias-yet")
    assert champion_of(client, "no-alias-yet") is None

    class Unavailable(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "registry down"}).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with LoopbackServer(Unavailable) as server:
        with pytest.raises(MlflowException):
            champion_of(mlflow.MlflowClient(server.url), "thinkpipe-glm4v")


RACER = """
import json, sys
import mlflow
from model_src.model_registry import promote
uri, name, version, accuracy = sys.argv[1:5]
client = mlflow.MlflowClient(uri)
promoted, reason = promote(client, name, version, {"accuracy_mean": float(accuracy)}, "h", 0.02, holder=f"export-{version}")
print(json.dumps({"version": version, "promoted": promoted, "reason": reason}))
"""


def test_two_exports_promoting_at_once_agree_on_one_champion(tmp_path):
    """Fault: two exports promote at the same moment, each pausing between reading the champion and
    moving the aliases (THINKPIPE_FAULT_PROMOTION_PAUSE_S). Without a lock both read "no champion"
    and both claim it; under the promotion lock the second compares with the first, so exactly one
    decision says "no champion yet" and the champion is the better version whichever ran first."""
    import json
    import os
    import subprocess
    import sys

    import mlflow

    from tests.conftest import ROOT

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    client.create_registered_model("racer")
    versions = {}
    for accuracy in ("0.3", "0.6"):
        run = client.create_run(client.create_experiment(f"e{accuracy}"))
        versions[accuracy] = str(client.create_model_version("racer", f"runs:/{run.info.run_id}/m", run.info.run_id,
                                                         tags={"thinkpipe.eval.accuracy_mean": accuracy,
                                                               "thinkpipe.eval_data_hash": "h"}).version)
    env = {**os.environ, "THINKPIPE_FAULT_PROMOTION_PAUSE_S": "1.5", "THINKPIPE_CACHE": str(tmp_path / "cache")}
    env.pop("THINKPIPE_NAMESPACE", None)
    racers = [subprocess.Popen([sys.executable, "-c", RACER, uri, "racer", version, accuracy], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for accuracy, version in versions.items()]
    decisions = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err[-2000:]
        decisions.append(json.loads(out.strip().splitlines()[-1]))
    assert sum("no champion yet" in d["reason"] for d in decisions) == 1, decisions
    assert str(client.get_model_version_by_alias("racer", "champion").version) == str(versions["0.6"])
    worse = next(d for d in decisions if d["version"] == versions["0.3"])
    better = next(d for d in decisions if d["version"] == versions["0.6"])
    assert better["promoted"] and (not worse["promoted"] or "no champion yet" in worse["reason"])


def test_the_promotion_lease_has_one_holder_and_an_expired_one_is_taken_over(tmp_path):
    """On a cluster the lock is a Kubernetes Lease (the loopback API server validates it strictly and
    refuses a replace with a stale resourceVersion): two holders never overlap, a Lease whose holder
    stopped renewing is taken over, and a live one makes a waiter time out naming it."""
    import threading
    import time
    from datetime import datetime, timedelta, timezone

    from kubernetes import client

    from model_src.cluster.lock import LockTimeout, exclusive, lease_lock
    from tests.k8s_api_server import KubernetesApiServer

    with KubernetesApiServer(tmp_path, {}) as server:
        api = client.CoordinationV1Api(client.ApiClient(_configuration(server.url)))
        held: list[tuple[str, float, float]] = []

        def hold(holder: str) -> None:
            with lease_lock("thinkpipe-promote-racer", "thinkpipe", holder, poll_s=0.05, api=api):
                start = time.monotonic()
                time.sleep(0.3)
                held.append((holder, start, time.monotonic()))

        threads = [threading.Thread(target=hold, args=(f"pod-{k}",)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(held) == 3
        spans = sorted((a, b) for _, a, b in held)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans
        assert ("delete", "Lease", "thinkpipe-promote-racer") in server.state.object_log

        stale = datetime.now(timezone.utc) - timedelta(minutes=10)  # a pod that died holding it
        api.create_namespaced_lease("thinkpipe", client.V1Lease(
            metadata=client.V1ObjectMeta(name="thinkpipe-promote-racer"),
            spec=client.V1LeaseSpec(holder_identity="dead-pod", lease_duration_seconds=60,
                                    acquire_time=stale, renew_time=stale)))
        with lease_lock("thinkpipe-promote-racer", "thinkpipe", "pod-new", timeout_s=5, poll_s=0.05, api=api):
            assert api.read_namespaced_lease("thinkpipe-promote-racer", "thinkpipe").spec.holder_identity == "pod-new"

        api.create_namespaced_lease("thinkpipe", client.V1Lease(  # a live holder
            metadata=client.V1ObjectMeta(name="thinkpipe-promote-racer"),
            spec=client.V1LeaseSpec(holder_identity="busy-pod", lease_duration_seconds=600,
                                    acquire_time=datetime.now(timezone.utc), renew_time=datetime.now(timezone.utc))))
        with pytest.raises(LockTimeout, match="thinkpipe/thinkpipe-promote-racer still held"):
            with lease_lock("thinkpipe-promote-racer", "thinkpipe", "pod-late", timeout_s=0.5, poll_s=0.05, api=api):
                pass

        # a live holder renews its Lease (every third of its duration): a 3-second Lease held 7 s is
        # never taken over (at 1 s, a loaded CI machine once let a renewal slip past the expiry)
        api.delete_namespaced_lease("thinkpipe-promote-racer", "thinkpipe")
        with lease_lock("thinkpipe-promote-racer", "thinkpipe", "pod-long", duration_s=3, api=api):
            with pytest.raises(LockTimeout):
                with lease_lock("thinkpipe-promote-racer", "thinkpipe", "pod-eager", timeout_s=7, poll_s=0.1,
                                api=api):
                    pass
            assert api.read_namespaced_lease("thinkpipe-promote-racer", "thinkpipe").spec.holder_identity == "pod-long"
        assert ("replace", "Lease", "thinkpipe-promote-racer") in server.state.object_log  # renewed

        # `exclusive` takes the Lease when the pod knows its namespace (the kube config names the server)
        import os
        os.environ["KUBECONFIG"] = str(server.kubeconfig(tmp_path / "kubeconfig"))
        os.environ["THINKPIPE_NAMESPACE"] = "thinkpipe"
        try:
            with exclusive("promote-other", "pod-x", timeout_s=5):
                assert api.read_namespaced_lease("thinkpipe-promote-other", "thinkpipe").spec.holder_identity == "pod-x"
        finally:
            del os.environ["KUBECONFIG"], os.environ["THINKPIPE_NAMESPACE"]


def _configuration(url: str):
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = url
    return configuration
