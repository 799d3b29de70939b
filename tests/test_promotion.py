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
