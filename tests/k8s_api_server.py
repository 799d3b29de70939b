"""A loopback stand-in for the bits of the Kubernetes API the training-job launcher uses
(PyTorchJob create/get/delete, pod list, pod log), with a one-node "training operator": a created
job's Master replica runs for real, here, as a subprocess with the container's command and plain
env plus the PET_* variables the real operator gives torchrun. No cluster is reachable here.

A created job's pod templates are validated against Kubernetes' own OpenAPI schema
(`kubernetes-validate`, strict: unknown fields are errors), as an API server with strict field
validation would; a template that fails is answered 422 naming the field, and nothing is created."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from tests.loopback import LoopbackServer
from model_src.train.distributed import free_port

def invalid_pod_templates(job: dict) -> list[str]:
    """Why each replica's pod template would be refused (kubernetes-validate has no schema for the
    PyTorchJob CRD itself: its pods are what it can check)."""
    import kubernetes_validate

    problems = []
    for role, replica in job.get("spec", {}).get("pytorchReplicaSpecs", {}).items():
        template = replica.get("template", {})
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{role.lower()}-template",
                                                                **{k: v for k, v in template.get("metadata", {}).items()
                                                                   if k != "name"}},
               "spec": template.get("spec", {})}
        try:
            kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"{role} pod template at {where or '(root)'}: {exc.message}")
    return problems


JOBS = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([^/]+)/pytorchjobs(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")


@dataclass
class Replica:
    pod: str
    job: str
    phase: str = "Pending"
    log: str = ""
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class ClusterState:
    requests: list[tuple[str, str]] = field(default_factory=list)
    jobs: dict[str, dict] = field(default_factory=dict)
    created: list[dict] = field(default_factory=list)   # every job body as the client sent it
    deleted: list[str] = field(default_factory=list)
    pods: dict[str, Replica] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=dict)


def _operate(state: ClusterState, name: str, cwd: Path) -> None:
    job = state.jobs[name]
    spec = job["spec"]
    container = spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    env = {**state.base_env, **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e},
           "PET_NPROC_PER_NODE": spec["nprocPerNode"], "PET_NNODES": "1", "PET_NODE_RANK": "0",
           "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(free_port())}
    replica = state.pods[f"{name}-master-0"]
    replica.phase = "Running"
    job["status"] = {"conditions": [{"type": "Running", "status": "True"}]}
    proc = subprocess.run(container["command"], cwd=cwd, env=env, capture_output=True, text=True)
    replica.log = proc.stdout + proc.stderr
    replica.phase = "Succeeded" if proc.returncode == 0 else "Failed"
    outcome = {"type": "Succeeded", "status": "True"} if proc.returncode == 0 else {
        "type": "Failed", "status": "True", "message": f"PyTorchJob {name} is failed because 1 Master replica(s) failed."}
    job["status"]["conditions"].append(outcome)
    replica.done.set()


def make_handler(state: ClusterState, cwd: Path):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, body, status: int = 200, content_type: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self):
            self._send({"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}, 404)

        def do_POST(self):  # noqa: N802
            url = urlparse(self.path)
            state.requests.append(("POST", url.path))
            match = JOBS.match(url.path)
            if not match:
                return self._not_found()
            job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            invalid = invalid_pod_templates(job)
            if invalid:  # what a server with strict field validation answers
                return self._send({"kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422,
                                   "message": "; ".join(invalid)}, 422)
            state.created.append(job)
            name = job["metadata"]["name"]
            if name in state.jobs:
                return self._send({"kind": "Status", "status": "Failure", "reason": "AlreadyExists", "code": 409}, 409)
            state.jobs[name] = job
            state.pods[f"{name}-master-0"] = Replica(f"{name}-master-0", name)
            threading.Thread(target=_operate, args=(state, name, cwd), daemon=True).start()
            self._send(job, 201)

        def do_GET(self):  # noqa: N802
            url = urlparse(self.path)
            query = parse_qs(url.query)
            state.requests.append(("GET", url.path))
            if (match := JOBS.match(url.path)) and match.group(2):
                job = state.jobs.get(match.group(2))
                return self._send(job) if job else self._not_found()
            if PODS.match(url.path):
                selector = dict(kv.split("=") for kv in query.get("labelSelector", [""])[0].split(",") if kv)
                job = selector.get("training.kubeflow.org/job-name")
                items = [{"metadata": {"name": r.pod, "labels": {"training.kubeflow.org/job-name": r.job,
                                                                  "training.kubeflow.org/replica-type": "master"}},
                          "status": {"phase": r.phase}} for r in state.pods.values() if r.job == job]
                return self._send({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
            if match := LOG.match(url.path):
                replica = state.pods.get(match.group(2))
                if replica is None:
                    return self._not_found()
                if query.get("follow", ["false"])[0].lower() == "true":  # the Python client sends "True"
                    replica.done.wait(600)  # following ends when the container does
                return self._send(replica.log, content_type="text/plain")
            return self._not_found()

        def do_DELETE(self):  # noqa: N802
            url = urlparse(self.path)
            state.requests.append(("DELETE", url.path))
            match = JOBS.match(url.path)
            if not match or match.group(2) not in state.jobs:
                return self._not_found()
            state.deleted.append(match.group(2))
            del state.jobs[match.group(2)]
            self._send({"kind": "Status", "status": "Success"})

    return Handler


class KubernetesApiServer(LoopbackServer):
    def __init__(self, cwd: Path, base_env: dict[str, str]):
        self.state = ClusterState(base_env=dict(base_env))
        super().__init__(make_handler(self.state, cwd))

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "thinkpipe"}}]}))
        return path
