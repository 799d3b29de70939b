"""A loopback stand-in for the Kubeflow Pipelines v2beta1 REST API, for tests of the requests
`thinkpipe submit` / `schedule` send through the real kfp.Client (no cluster here). It keeps
pipelines, versions, experiments and runs in memory and records every request. Request bodies are
checked against the API's own models (kfp-server-api's v2beta1 classes, nested ones included): a
field the API does not have is rejected with 400, naming it, so a misspelt field cannot pass; a list
request's filter may only use the keys, predicate fields and operations the server knows."""

from __future__ import annotations

import cgi
import io
import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from tests.loopback import LoopbackServer
from model_src.serving.rollout_server import send_json

API = "/apis/v2beta1"


@dataclass
class KfpState:
    requests: list[tuple[str, str]] = field(default_factory=list)
    pipelines: dict[str, dict] = field(default_factory=dict)           # id -> pipeline
    versions: dict[str, dict] = field(default_factory=dict)            # id -> version (+ "package")
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    recurring_runs: list[dict] = field(default_factory=list)


def unknown_fields(body, model: str, path: str = "") -> list[str]:
    """Fields of `body` that the v2beta1 model `model` (e.g. "V2beta1Run") and its nested models lack."""
    import kfp_server_api.models as models

    cls = getattr(models, model, None)
    if cls is None or not isinstance(body, dict):  # a scalar, a map or a free-form object
        return []
    problems = []
    for key, value in body.items():
        if key not in cls.attribute_map:
            problems.append(f"{path}{key} (not a field of {model})")
        else:
            problems += unknown_fields(value, cls.openapi_types[key], f"{path}{key}.")
    return problems


BODY_MODELS = {f"{API}/experiments": "V2beta1Experiment", f"{API}/runs": "V2beta1Run",
               f"{API}/recurringruns": "V2beta1RecurringRun"}


# The keys KFP's API server maps to its model's columns per listed resource (v2beta1 names and the
# v1 names it still takes); any other key is refused with InvalidArgument, as the server does.
FILTER_KEYS = {
    "pipelines": {"pipeline_id", "id", "display_name", "name", "created_at", "description", "namespace"},
    "versions": {"pipeline_version_id", "id", "display_name", "name", "created_at", "pipeline_id", "description"},
    "experiments": {"experiment_id", "id", "display_name", "name", "created_at", "description", "namespace",
                    "storage_state"},
}
# a Predicate's fields, in the proto's names and their JSON (lowerCamelCase) spelling, both of
# which the server's JSON decoding accepts, and the operations it knows
PREDICATE_FIELDS = {"key", "operation", "int_value", "intValue", "long_value", "longValue", "string_value",
                    "stringValue", "timestamp_value", "timestampValue", "int_values", "intValues", "long_values",
                    "longValues", "string_values", "stringValues"}
OPERATIONS = {"EQUALS": 1, "NOT_EQUALS": 2, "GREATER_THAN": 3, "GREATER_THAN_EQUALS": 5, "LESS_THAN": 6,
              "LESS_THAN_EQUALS": 7, "IN": 8, "IS_SUBSTRING": 9}  # by name or number, as JSON enums go


class FilterError(ValueError):
    pass


def _name_filter(query: dict, resource: str) -> str | None:
    """The display name a list request filters on, after checking the filter as the server would."""
    raw = query.get("filter", [""])[0]
    if not raw:
        return None
    parsed = json.loads(raw)
    if set(parsed) - {"predicates"}:
        raise FilterError(f"unknown filter field(s): {', '.join(sorted(set(parsed) - {'predicates'}))}")
    for p in parsed.get("predicates", []):
        if set(p) - PREDICATE_FIELDS:
            raise FilterError(f"unknown predicate field(s): {', '.join(sorted(set(p) - PREDICATE_FIELDS))}")
        if p.get("key") not in FILTER_KEYS[resource]:
            raise FilterError(f"Invalid input error: {resource} cannot be filtered on key {p.get('key')!r}")
        if p.get("operation") not in {*OPERATIONS, *OPERATIONS.values()}:
            raise FilterError(f"unknown operation {p.get('operation')!r}")
    return next((p.get("stringValue") or p.get("string_value") for p in parsed.get("predicates", [])
                 if p.get("key") in ("display_name", "name")), None)


def make_handler(state: KfpState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, body: dict, status: int = 200) -> None:
            send_json(self, status, body)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def do_GET(self):  # noqa: N802
            url = urlparse(self.path)
            query = parse_qs(url.query)
            state.requests.append(("GET", url.path))
            resource = ("versions" if url.path.endswith("/versions") else "pipelines" if "/pipelines" in url.path
                        else "experiments")
            try:
                name = _name_filter(query, resource)
            except FilterError as exc:  # what the server answers: InvalidArgument
                return self._send({"error": str(exc), "code": 3}, 400)
            if url.path == f"{API}/healthz":
                return self._send({"multi_user": False})
            if url.path == f"{API}/pipelines":
                found = [p for p in state.pipelines.values() if name is None or p["display_name"] == name]
                return self._send({"pipelines": found, "total_size": len(found)})
            if url.path.startswith(f"{API}/pipelines/") and url.path.endswith("/versions"):
                pid = url.path.split("/")[4]
                found = [{k: v for k, v in ver.items() if k != "package"} for ver in state.versions.values()
                         if ver["pipeline_id"] == pid and (name is None or ver["display_name"] == name)]
                return self._send({"pipeline_versions": found, "total_size": len(found)})
            if url.path == f"{API}/experiments":
                found = [e for e in state.experiments.values() if name is None or e["display_name"] == name]
                return self._send({"experiments": found, "total_size": len(found)})
            return self._send({"error": f"not implemented: GET {url.path}"}, 404)

        def do_POST(self):  # noqa: N802
            url = urlparse(self.path)
            query = parse_qs(url.query)
            state.requests.append(("POST", url.path))
            if url.path in (f"{API}/pipelines/upload", f"{API}/pipelines/upload_version"):
                form = cgi.FieldStorage(fp=io.BytesIO(self._body()), headers=self.headers,
                                        environ={"REQUEST_METHOD": "POST"})
                package = form["uploadfile"].file.read().decode()
                if url.path.endswith("/upload"):
                    pid = f"pipeline-{len(state.pipelines) + 1}"
                    state.pipelines[pid] = {"pipeline_id": pid, "display_name": query["name"][0]}
                    name = query["name"][0]
                else:
                    pid, name = query["pipelineid"][0], query["name"][0]
                vid = f"version-{len(state.versions) + 1}"
                state.versions[vid] = {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": name,
                                       "package": package}
                body = state.pipelines[pid] if url.path.endswith("/upload") else {
                    k: v for k, v in state.versions[vid].items() if k != "package"}
                return self._send(body)
            body = json.loads(self._body() or b"{}")
            unknown = unknown_fields(body, BODY_MODELS.get(url.path, ""))
            if unknown:  # what a server with strict field validation answers
                return self._send({"error": f"unknown field(s): {', '.join(unknown)}", "code": 3}, 400)
            if url.path == f"{API}/experiments":
                eid = f"experiment-{len(state.experiments) + 1}"
                state.experiments[eid] = {**body, "experiment_id": eid}
                return self._send(state.experiments[eid])
            if url.path == f"{API}/runs":
                state.runs.append(body)
                return self._send({**body, "run_id": f"run-{len(state.runs)}"})
            if url.path == f"{API}/recurringruns":
                state.recurring_runs.append(body)
                return self._send({**body, "recurring_run_id": f"recurring-{len(state.recurring_runs)}"})
            return self._send({"error": f"not implemented: POST {url.path}"}, 404)

    return Handler


class KfpApiServer(LoopbackServer):
    def __init__(self):
        self.state = KfpState()
        super().__init__(make_handler(self.state))
