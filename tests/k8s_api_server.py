"""A loopback stand-in for the bits of the Kubernetes API the training-job launcher uses
(TrainJob and PyTorchJob create/get/delete, pod list, pod log), with a one-node operator: a
created job's first node runs for real, here, as a subprocess with the trainer's command and plain
env plus the PET_* variables the real operators give torchrun. No cluster is reachable here.

Created objects are validated as an API server with strict field validation would, and a job
that fails is answered 422 naming the field, with nothing created:
- a TrainJob against Kubeflow Trainer's API models (kubeflow-trainer-api 2.3, unknown fields are
  errors), and against the one ClusterTrainingRuntime installed here, `torch-distributed` (a
  replicated job and a container named `node`): a patch naming another is refused, as the
  trainer's webhook refuses it;
- a PyTorchJob's pod templates against Kubernetes' own OpenAPI schema (`kubernetes-validate`,
  strict), the CRD itself having no published schema to check.
A failed job stays until deleted, so a relaunch finds it (409 on create). Leases
(coordination.k8s.io/v1, the promotion lock) are validated the same way and replaced only with the
resourceVersion last read, as the API server's optimistic concurrency does (409 otherwise)."""

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


# the ClusterTrainingRuntimes installed on this stand-in "cluster": replicated jobs -> containers
RUNTIMES = {"torch-distributed": {"node": {"node"}}}


def invalid_train_job(job: dict) -> list[str]:
    """Why the trainer's API (models, webhook) would refuse this TrainJob."""
    from model_src.cluster.trainjob_schema import train_job_problems

    problems = train_job_problems(job)
    spec = job.get("spec") or {}
    runtime = RUNTIMES.get((spec.get("runtimeRef") or {}).get("name"))
    if runtime is None:
        return [*problems, f"ClusterTrainingRuntime {(spec.get('runtimeRef') or {}).get('name')!r} not found"]
    for patch in spec.get("runtimePatches") or []:
        for rjob in (((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}).get(
                "replicatedJobs") or []:
            if rjob.get("name") not in runtime:
                problems.append(f"runtimePatches: the runtime has no replicated job {rjob.get('name')!r}")
                continue
            pod = ((rjob.get("template") or {}).get("spec") or {}).get("template") or {}
            for c in (pod.get("spec") or {}).get("containers") or []:
                if c.get("name") not in runtime[rjob["name"]]:
                    problems.append(f"runtimePatches: the runtime has no container {c.get('name')!r}")
    return problems


JOBS = re.compile(r"^/apis/(kubeflow\.org/v1/namespaces/([^/]+)/pytorchjobs|"
                  r"trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs)(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$")
SERVICES = re.compile(r"^/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?$")


def invalid_object(obj: dict) -> list[str]:
    """Why Kubernetes' schema (strict) refuses a core object (a Pod, a Service)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{obj.get('kind')} at {'.'.join(str(p) for p in exc.path) or '(root)'}: {exc.message}"]
    return []
LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
LEASES = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/]+))?$")
WORKFLOW = re.compile(r"^/apis/argoproj\.io/v1alpha1/namespaces/([^/]+)/workflows/([^/]+)$")  # get only


@dataclass
class Replica:
    pod: str
    job: str
    labels: dict[str, str]
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
    # plain pods and services (the rollout server): not run here; a pod is Ready at once unless
    # `pods_become_ready` is off, when it fails (a server that could not start)
    objects: dict[tuple[str, str], dict] = field(default_factory=dict)
    object_log: list[tuple[str, str, str]] = field(default_factory=list)  # (verb, kind, name)
    pods_become_ready: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)  # the server's handlers run in threads
    version: int = 0  # resourceVersion counter


def _first_node(job: dict) -> tuple[str, dict[str, str], list[str], list[dict], str, int]:
    """(pod name, pod labels, command, env, processes per node, nodes) of node 0, as the operators make it."""
    name, spec = job["metadata"]["name"], job["spec"]
    if job["kind"] == "TrainJob":
        trainer = spec["trainer"]
        labels = {"jobset.sigs.k8s.io/jobset-name": name, "jobset.sigs.k8s.io/replicatedjob-name": "node",
                  "batch.kubernetes.io/job-completion-index": "0"}
        return (f"{name}-node-0-0", labels, trainer["command"], trainer.get("env", []),
                str(trainer.get("numProcPerNode", 1)), trainer.get("numNodes", 1))
    [container] = spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    labels = {"training.kubeflow.org/job-name": name, "training.kubeflow.org/replica-type": "master"}
    workers = spec["pytorchReplicaSpecs"].get("Worker", {}).get("replicas", 0)
    return f"{name}-master-0", labels, container["command"], container.get("env", []), spec["nprocPerNode"], 1 + workers


def _operate(state: ClusterState, name: str, cwd: Path) -> None:
    job = state.jobs[name]
    pod, _, command, env_list, per_node, nodes = _first_node(job)
    replica = state.pods[pod]
    succeeded = "Complete" if job["kind"] == "TrainJob" else "Succeeded"
    job["status"] = {"conditions": [{"type": "Created", "status": "True"}]}
    if nodes != 1:  # one node is all this stand-in has
        replica.phase, replica.log = "Failed", f"stand-in: {nodes} nodes asked for, it runs one\n"
        job["status"]["conditions"].append({"type": "Failed", "status": "True", "message": replica.log.strip()})
        replica.done.set()
        return
    env = {**state.base_env, **{e["name"]: e["value"] for e in env_list if "value" in e},
           "PET_NPROC_PER_NODE": per_node, "PET_NNODES": "1", "PET_NODE_RANK": "0",
           "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(free_port())}
    replica.phase = "Running"
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    replica.log = proc.stdout + proc.stderr
    replica.phase = "Succeeded" if proc.returncode == 0 else "Failed"
    outcome = {"type": succeeded, "status": "True"} if proc.returncode == 0 else {
        "type": "Failed", "status": "True", "message": f"{job['kind']} {name} failed: node 0 exited {proc.returncode}"}
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

        def _core_object(self, kind: str, name: str | None):
            if self.command == "POST":
                obj = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                invalid = invalid_object(obj)
                if invalid:
                    return self._send({"kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422,
                                       "message": "; ".join(invalid)}, 422)
                key = (kind, obj["metadata"]["name"])
                if key in state.objects:
                    return self._send({"kind": "Status", "status": "Failure", "reason": "AlreadyExists",
                                       "code": 409}, 409)
                if kind == "Pod":
                    ready = state.pods_become_ready
                    obj["status"] = {"phase": "Running" if ready else "Failed",
                                     "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
                    state.pods[obj["metadata"]["name"]] = Replica(obj["metadata"]["name"], "", {},
                                                                  "Running" if ready else "Failed",
                                                                  "" if ready else "CUDA error: no device\n")
                    state.pods[obj["metadata"]["name"]].done.set()
                state.objects[key] = obj
                state.object_log.append(("create", kind, key[1]))
                return self._send(obj, 201)
            if (kind, name) not in state.objects:
                return self._not_found()
            if self.command == "DELETE":
                del state.objects[(kind, name)]
                state.object_log.append(("delete", kind, name))
                return self._send({"kind": "Status", "status": "Success"})
            return self._send(state.objects[(kind, name)])

        def _lease(self, name: str | None):
            if self.command in ("POST", "PUT"):
                obj = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                obj.setdefault("apiVersion", "coordination.k8s.io/v1")  # the server takes them from the URL
                obj.setdefault("kind", "Lease")
                invalid = invalid_object(obj)
                if invalid:
                    return self._send({"kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422,
                                       "message": "; ".join(invalid)}, 422)
                key = ("Lease", obj["metadata"]["name"])
                with state.lock:
                    current = state.objects.get(key)
                    if self.command == "POST" and current is not None:
                        return self._send({"kind": "Status", "status": "Failure", "reason": "AlreadyExists",
                                           "code": 409}, 409)
                    if self.command == "PUT" and (current is None or obj["metadata"].get("resourceVersion")
                                                  != current["metadata"]["resourceVersion"]):
                        return self._send({"kind": "Status", "status": "Failure", "reason": "Conflict",
                                           "code": 409 if current is not None else 404}, 409 if current else 404)
                    state.version += 1
                    obj["metadata"]["resourceVersion"] = str(state.version)
                    state.objects[key] = obj
                    state.object_log.append(("create" if self.command == "POST" else "replace", "Lease", key[1]))
                return self._send(obj, 201 if self.command == "POST" else 200)
            with state.lock:
                obj = state.objects.get(("Lease", name))
                if obj is None:
                    return self._not_found()
                if self.command == "DELETE":
                    del state.objects[("Lease", name)]
                    state.object_log.append(("delete", "Lease", name))
                    return self._send({"kind": "Status", "status": "Success"})
            return self._send(obj)

        def do_PUT(self):  # noqa: N802
            url = urlparse(self.path)
            state.requests.append(("PUT", url.path))
            if match := LEASES.match(url.path):
                return self._lease(match.group(2))
            return self._not_found()

        def do_POST(self):  # noqa: N802
            url = urlparse(self.path)
            state.requests.append(("POST", url.path))
            if LEASES.match(url.path):
                return self._lease(None)
            if PODS.match(url.path):
                return self._core_object("Pod", None)
            if SERVICES.match(url.path):
                return self._core_object("Service", None)
            match = JOBS.match(url.path)
            if not match:
                return self._not_found()
            job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            invalid = invalid_train_job(job) if "trainjobs" in url.path else invalid_pod_templates(job)
            if invalid:  # what a server with strict field validation answers
                return self._send({"kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422,
                                   "message": "; ".join(invalid)}, 422)
            state.created.append(job)
            name = job["metadata"]["name"]
            if name in state.jobs:
                return self._send({"kind": "Status", "status": "Failure", "reason": "AlreadyExists", "code": 409}, 409)
            state.jobs[name] = job
            pod, labels, *_ = _first_node(job)
            state.pods[pod] = Replica(pod, name, labels)
            threading.Thread(target=_operate, args=(state, name, cwd), daemon=True).start()
            self._send(job, 201)

        def do_GET(self):  # noqa: N802
            url = urlparse(self.path)
            query = parse_qs(url.query)
            state.requests.append(("GET", url.path))
            if match := LEASES.match(url.path):
                return self._lease(match.group(2))
            if match := WORKFLOW.match(url.path):  # what a test put in state.objects[("Workflow", name)]
                workflow = state.objects.get(("Workflow", match.group(2)))
                return self._send(workflow) if workflow else self._not_found()
            if (match := JOBS.match(url.path)) and match.group(4):
                job = state.jobs.get(match.group(4))
                return self._send(job) if job else self._not_found()
            if match := POD.match(url.path):
                return self._core_object("Pod", match.group(2))
            if PODS.match(url.path):
                selector = dict(kv.split("=") for kv in query.get("labelSelector", [""])[0].split(",") if kv)
                items = [{"metadata": {"name": r.pod, "labels": r.labels}, "status": {"phase": r.phase}}
                         for r in state.pods.values() if selector and selector.items() <= r.labels.items()]
                return self._send({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
            if match := LOG.match(url.path):
                replica = state.pods.get(match.group(2))
                if replica is None:
                    return self._not_found()
                if query.get("follow", ["false"])[0].lower() == "true":  # the Python client sends "True"
                    replica.done.wait(600)  # following ends when the container does
                return self._send(replica.log, content_type="text/plain")
            if (match := SERVICES.match(url.path)) and match.group(2):
                return self._core_object("Service", match.group(2))
            return self._not_found()

        def do_DELETE(self):  # noqa: N802
            url = urlparse(self.path)
            state.requests.append(("DELETE", url.path))
            if match := LEASES.match(url.path):
                return self._lease(match.group(2))
            if match := POD.match(url.path):
                return self._core_object("Pod", match.group(2))
            if (match := SERVICES.match(url.path)) and match.group(2):
                return self._core_object("Service", match.group(2))
            match = JOBS.match(url.path)
            if not match or match.group(4) not in state.jobs:
                return self._not_found()
            state.deleted.append(match.group(4))
            del state.jobs[match.group(4)]
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
