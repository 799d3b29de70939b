"""Tell someone when a pipeline run fails: one JSON POST to a webhook (Slack-compatible `text`
plus the fields a bot would read: pipeline run, failed stages, cause, the MLflow run to look at).

The URL is a secret (a chat webhook's path is its credential): it comes from the environment,
`THINKPIPE_FAILURE_WEBHOOK`, which a cluster fills from the Secret `cluster.failure_webhook_secret`
names (key `url`) for the exit handlers only; it is never logged, only its host. The training
DAG's exit handler (`finish`) posts when any stage failed; the retraining DAG's outer exit handler
(`notify_failure`) posts when the run failed before the training DAG could (the data check), so
one failure is one message. A webhook that does not answer does not fail the exit handler: it is
reported in the log and the run's tags instead.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field

from model_src.names import FAILURE_WEBHOOK_ENV

NOTIFIED_TAG = "thinkpipe.failure_notified"  # on the parent run: the failure was posted (host)


@dataclass(frozen=True)
class Failure:
    pipeline: str                 # thinkpipe-training / thinkpipe-retraining
    pipeline_run: str
    cause: str
    failed_stages: list[str] = field(default_factory=list)
    mlflow_run: str = ""          # where the run's lineage and logs are: a link, or a run id

    def text(self) -> str:
        stages = ", ".join(self.failed_stages) or "(before any stage ran)"
        where = f" - {self.mlflow_run}" if self.mlflow_run else ""
        return f"thinkpipe: {self.pipeline} run {self.pipeline_run} failed at {stages}: {self.cause[:500]}{where}"


def webhook_url() -> str:
    return os.environ.get(FAILURE_WEBHOOK_ENV, "")


def mlflow_run_link(tracking_uri: str, experiment_id: str, run_id: str = "") -> str:
    """The MLflow UI page of a run (or of the experiment) when the store is a server, credentials
    stripped; else the run (or experiment) id.

    >>> mlflow_run_link("https://u:p@mlflow.example.com/", "3", "ab12")
    'https://mlflow.example.com/#/experiments/3/runs/ab12'
    >>> mlflow_run_link("sqlite:///x.db", "3", "ab12"), mlflow_run_link("sqlite:///x.db", "3")
    ('run ab12', 'experiment 3')
    """
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return f"run {run_id}" if run_id else f"experiment {experiment_id}"
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")


def post_failure(failure: Failure, url: str, timeout_s: float = 10.0) -> str:
    """POST the failure; returns '' on success or why it could not be delivered (host only, never the URL)."""
    host = urllib.parse.urlsplit(url).hostname or "?"
    body = json.dumps({"text": failure.text(), **asdict(failure)}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            reply.read()
        return ""
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "code", None) or getattr(exc, "reason", None) or type(exc).__name__
        return f"webhook at {host} did not take the failure notice: {reason}"
