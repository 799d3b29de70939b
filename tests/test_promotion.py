"""The promotion gate on hand-made per-prompt records, the champion it must compare with, and what
counts as "no champion yet"."""

import pytest

from model_src.eval.promotion import compare, decide, wilson

GATE = dict(margin=0.02, min_se=2.0, tolerance=0.02)


def records(rewards_by_domain: dict[str, list[float]]) -> list[dict]:
    return [{"id": f"{domain}-{i}", "domain": domain, "reward": r}
            for domain, rewards in rewards_by_domain.items() for i, r in enumerate(rewards)]


def test_the_same_data_needs_a_gain_beyond_two_paired_standard_errors():
    champion = records({"digits": [0.0] * 40, "ocr": [0.5] * 40})
    small = records({"digits": [1.0] * 2 + [0.0] * 38, "ocr": [0.5] * 40})  # +0.025: within the noise
    large = records({"digits": [1.0] * 12 + [0.0] * 28, "ocr": [0.5] * 40})  # +0.15
    said = decide(compare(small, champion), new_data=False, **GATE)
    assert not said.promoted and said.rule == "superior" and "not shown superior" in said.reason
    assert said.figures["gain"] == pytest.approx(0.025) and said.figures["gain_se"] > 0.0125
    assert decide(compare(large, champion), new_data=False, **GATE).promoted


def test_new_data_promotes_a_non_inferior_model_and_refuses_a_worse_one():
    champion = records({"digits": [1.0, 0.0] * 50})
    equal = records({"digits": [0.0, 1.0] * 50})  # the same mean on other prompts: a wide SE, no drop
    same = records({"digits": [1.0, 0.0] * 50})
    worse = records({"digits": [1.0, 0.0] * 30 + [0.0, 0.0] * 20})
    assert decide(compare(same, champion), new_data=True, **GATE).promoted  # gain 0, SE 0: bound 0 > -0.02
    assert not decide(compare(same, champion), new_data=False, **GATE).promoted  # not superior on the same data
    wide = decide(compare(equal, champion), new_data=True, **GATE)
    assert not wide.promoted and "not shown non-inferior" in wide.reason  # SE 0.1: the bound is -0.2
    bad = decide(compare(worse, champion), new_data=True, **GATE)
    assert not bad.promoted and bad.figures["gain"] == pytest.approx(-0.2)


def test_a_domain_drop_blocks_only_beyond_its_tolerance_and_two_of_its_own_ses():
    champion = records({"digits": [0.0] * 50, "ocr": [1.0] * 50})
    noisy_drop = records({"digits": [1.0] * 50, "ocr": [1.0] * 49 + [0.0]})  # ocr -0.02 (SE 0.02): noise
    real_drop = records({"digits": [1.0] * 50, "ocr": [1.0] * 40 + [0.0] * 10})  # ocr -0.2 (SE 0.057)
    assert decide(compare(noisy_drop, champion), new_data=False, **GATE).promoted
    blocked = decide(compare(real_drop, champion), new_data=False, **GATE)
    assert not blocked.promoted and "ocr drops by 0.2000" in blocked.reason


def test_no_champion_promotes_and_another_family_is_not_comparable():
    assert decide(None, new_data=True, **GATE).reason == "no champion yet"
    said = decide(None, new_data=True, family_mismatch="the champion is a LlamaForCausalLM model", **GATE)
    assert not said.promoted and said.rule == "not-comparable" and "not comparable" in said.reason


def test_the_figures_carry_both_models_per_domain_with_wilson_intervals():
    champion = records({"digits": [0.0] * 10, "ocr": [0.5] * 10})
    challenger = records({"digits": [1.0] * 5 + [0.0] * 5, "ocr": [0.5] * 10})
    figures = decide(compare(challenger, champion), new_data=True, **GATE).figures
    assert figures["challenger/digits"] == 0.5 and figures["champion/digits"] == 0.0
    assert (figures["challenger_ci_low/digits"], figures["challenger_ci_high/digits"]) == pytest.approx(wilson(0.5, 10))
    assert figures["prompts/ocr"] == 10 and figures["gain/ocr"] == 0.0
    assert figures["champion_mean"] == 0.25 and figures["challenger_mean"] == 0.5


def test_a_comparison_with_another_champion_than_the_current_is_stale():
    from types import SimpleNamespace

    from model_src.config import ExportConfig
    from model_src.model_registry import gate

    report = {"samples": records({"d": [1.0] * 4}), "eval_data_hash": "h", "family": "F",
              "champion": {"version": "1", "family": "F", "eval_data_hash": "h", "samples": records({"d": [0.0] * 4})}}
    assert gate(report, SimpleNamespace(version=1), ExportConfig()).promoted
    moved = gate(report, SimpleNamespace(version=2), ExportConfig())
    assert not moved.promoted and moved.rule == "stale" and "now version 2" in moved.reason
    assert not gate({**report, "champion": None}, SimpleNamespace(version=1), ExportConfig()).promoted
    assert gate({**report, "champion": None}, None, ExportConfig()).reason == "no champion yet"


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
from model_src.config import ExportConfig
from model_src.model_registry import promote
uri, name, version, accuracy = sys.argv[1:5]
client = mlflow.MlflowClient(uri)
report = {"samples": [{"id": "p", "domain": "d", "reward": float(accuracy)}], "eval_data_hash": "h", "family": "F",
          "champion": None}
decision = promote(client, name, version, report, ExportConfig(), holder=f"export-{version}")
print(json.dumps({"version": version, "promoted": decision.promoted, "reason": decision.reason}))
"""


def test_two_exports_promoting_at_once_agree_on_one_champion(tmp_path):
    """Fault: two exports promote at the same moment, each pausing between reading the champion and
    moving the aliases (THINKPIPE_FAULT_PROMOTION_PAUSE_S). Both were evaluated when there was no
    champion. Without a lock both read "no champion" and both claim it; under the promotion lock the
    second finds the first's version champion, which its evaluation never saw, so it stays candidate
    as stale (to be compared with that champion by a new run): exactly one champion, one decision each."""
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
    first = [d for d in decisions if d["reason"] == "no champion yet"]
    second = [d for d in decisions if "run again to compare" in d["reason"]]
    assert len(first) == 1 and len(second) == 1, decisions
    assert first[0]["promoted"] and not second[0]["promoted"]
    assert str(client.get_model_version_by_alias("racer", "champion").version) == first[0]["version"]


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


def test_eval_prompts_the_champion_trained_on_are_left_out_of_the_comparison():
    from types import SimpleNamespace

    from model_src.config import ExportConfig
    from model_src.model_registry import gate

    ours = records({"d": [1.0, 1.0, 0.0, 0.0]})
    theirs = records({"d": [0.0, 0.0, 1.0, 1.0]})  # the champion "knows" d-2 and d-3: it trained on them
    champion = {"version": "1", "family": "F", "eval_data_hash": "old", "samples": theirs, "trained_on": ["d-2", "d-3"]}
    report = {"samples": ours, "eval_data_hash": "new", "family": "F", "champion": champion}
    said = gate(report, SimpleNamespace(version=1), ExportConfig())
    assert said.promoted and said.figures["champion_trained_on"] == 2 and said.figures["prompts/d"] == 2
    assert "2 eval prompts the champion trained on left out" in said.reason
    everything = gate({**report, "champion": {**champion, "trained_on": [r["id"] for r in ours]}},
                      SimpleNamespace(version=1), ExportConfig())
    assert not everything.promoted and "nothing to compare on" in everything.reason
    unknown = gate({**report, "champion": {**champion, "trained_on": None}}, SimpleNamespace(version=1), ExportConfig())
    assert "recorded no training keys" in unknown.reason and "champion_trained_on" not in unknown.figures
