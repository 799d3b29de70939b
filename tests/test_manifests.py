"""Kubernetes manifests: every overlay renders with `kubectl kustomize` and validates offline with
`kubernetes-validate --strict`; every pod runs non-root, read-only, with limits; RBAC is least
privilege; and nothing that looks like a secret value is in the manifests, the compiled pipeline or
the MLflow params of a pipeline run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model_src.secret_scan import find_secrets
from tests.conftest import ROOT

BIN = Path(sys.executable).parent
MANIFESTS = ROOT / "manifests"
OUT_OF_BAND_SECRETS = {"thinkpipe-postgres", "thinkpipe-s3"}  # created by operators, see manifests/README.md


def _render(overlay: str) -> list[dict]:
    proc = subprocess.run([str(BIN / "kubectl"), "kustomize", str(MANIFESTS / "overlays" / overlay)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def _validate(objects: list[dict], tmp_path: Path) -> None:
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    proc = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "ERROR" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def _pod_specs(objects: list[dict]):
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]


def _check_pod(name: str, spec: dict) -> None:
    pod_security = spec.get("securityContext", {})
    assert pod_security.get("runAsNonRoot") is True, name
    assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
    for container in spec["containers"] + spec.get("initContainers", []):
        where = f"{name}/{container['name']}"
        security = container.get("securityContext", {})
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], where
        limits = container.get("resources", {}).get("limits", {})
        assert {"cpu", "memory"} <= set(limits), where
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            assert ref is None or ref["name"] in OUT_OF_BAND_SECRETS, where
            assert "value" not in env or not find_secrets(f"{env['name']}={env['value']}"), where


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_renders_validates_and_follows_the_pod_rules(overlay, tmp_path):
    objects = _render(overlay)
    _validate(objects, tmp_path)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for expected in [("Namespace", "thinkpipe"), ("ServiceAccount", "thinkpipe-pipeline"), ("Role", "thinkpipe-pipeline"),
                     ("RoleBinding", "thinkpipe-pipeline"), ("Deployment", "mlflow"), ("StatefulSet", "postgres"),
                     ("Deployment", "minio"), ("Job", "minio-buckets"), ("Deployment", "vllm"),
                     ("PersistentVolumeClaim", "thinkpipe-checkpoints"), ("NetworkPolicy", "default-deny-ingress")]:
        assert expected in kinds, expected
    assert not any(o["kind"] == "Secret" for o in objects)  # secrets never live in the repo
    assert all(o["metadata"].get("namespace") == "thinkpipe" for o in objects if o["kind"] != "Namespace")
    for name, spec in _pod_specs(objects):
        _check_pod(name, spec)
    vllm = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "vllm")
    gpus = vllm["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus == "1") == (overlay == "prod")


def test_pipeline_role_is_least_privilege():
    objects = _render("dev")
    (role,) = [o for o in objects if o["kind"] == "Role"]
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert not any("*" in item for item in granted)
    assert {r for _, r, _ in granted} == {"trainjobs", "trainjobs/status", "pytorchjobs", "pytorchjobs/status",
                                          "pods", "pods/log"}
    assert not {v for _, r, v in granted if r in ("pods", "pods/log", "trainjobs/status", "pytorchjobs/status")} \
        - {"get", "list", "watch"}
    # the training jobs' pods: an identity with no binding and no token
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    assert accounts["thinkpipe-trainer"]["automountServiceAccountToken"] is False
    bound = {s["name"] for o in objects if o["kind"] == "RoleBinding" for s in o["subjects"]}
    assert "thinkpipe-trainer" not in bound


def test_no_secret_values_in_manifests_compiled_pipeline_or_mlflow_params(tiny, first_run):
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in MANIFESTS.rglob("*.yaml")}
    texts["pipelines/compiled/training.yaml"] = (ROOT / "pipelines" / "compiled" / "training.yaml").read_text()
    texts.update({f"rendered/{o}": yaml.safe_dump_all(_render(o)) for o in ("dev", "prod")})
    client = tiny.client()
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            texts[f"mlflow params of {run.info.run_id}"] = "\n".join(f"{k}={v}" for k, v in run.data.params.items())
            texts[f"mlflow tags of {run.info.run_id}"] = "\n".join(f"{k}={v}" for k, v in run.data.tags.items())
    assert len(texts) > 20
    found = {where: hits for where, text in texts.items() if (hits := find_secrets(text))}
    assert found == {}
    # the scanner does catch a planted value in the same kind of text
    planted = texts["pipelines/compiled/training.yaml"] + "\n  AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMIK7MDENGbPxRfiCYzz\n"
    assert find_secrets(planted)
