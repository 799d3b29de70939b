"""Submit the DAGs to a Kubeflow Pipelines API server: a new pipeline version per code version and
compiled IR, then a run (`thinkpipe submit`) or a recurring run of the retraining DAG (`thinkpipe schedule`).

Authentication is kfp.Client's own: the kube config / in-cluster service account token
(`KF_PIPELINES_SA_TOKEN_PATH`), never a token on the command line or in code.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path

_CRON_FIELD = re.compile(r"^[0-9*/,\-?LW#A-Za-z]+$")


class SubmitError(RuntimeError):
    pass


def thinkpipe_version() -> str:
    try:
        return package_version("thinkpipe")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def pipeline_version_name(git_commit: str, package: bytes, kfp_caching: bool = True) -> str:
    """'0.1.0-<12 hex of the commit>[-dirty]-<8 hex of the IR>[-nocache]': one KFP pipeline version
    per code version and compiled IR (the profile and its `--set` overrides change the IR, and a
    reused name must never run another IR than the one it was given).

    >>> pipeline_version_name("0123456789abcdef0123+dirty.77aa", b"ir", False).split("-", 1)[1]
    '0123456789ab-dirty-0cb2bf34-nocache'
    """
    sha, _, dirty = git_commit.partition("+")
    return (f"{thinkpipe_version()}-{sha[:12]}" + ("-dirty" if dirty else "")
            + f"-{hashlib.sha256(package).hexdigest()[:8]}" + ("" if kfp_caching else "-nocache"))


def kfp_cron(expression: str) -> str:
    """KFP's scheduler takes six fields (seconds first); accept the usual five as well.

    >>> kfp_cron("0 3 * * *")
    '0 0 3 * * *'
    >>> kfp_cron("30 0 3 * * 1-5")
    '30 0 3 * * 1-5'
    """
    fields = expression.split()
    if len(fields) not in (5, 6) or not all(_CRON_FIELD.match(f) for f in fields):
        raise SubmitError(f"cron expression {expression!r}: expected 5 fields (minute hour day month weekday) "
                          f"or 6 (seconds first), e.g. '0 3 * * *'")
    return " ".join(["0", *fields] if len(fields) == 5 else fields)


@dataclass(frozen=True)
class Submitted:
    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str
    run_id: str = ""
    recurring_run_id: str = ""


def _find_version(client, pipeline_id: str, name: str) -> str | None:
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    listed = client.list_pipeline_versions(pipeline_id=pipeline_id, filter=flt)
    for v in listed.pipeline_versions or []:
        if v.display_name == name:
            return v.pipeline_version_id
    return None


def upload_version(client, pipeline: str, profile: str, git_commit: str, kfp_caching: bool = True,
                   overrides: list[str] | tuple[str, ...] = ()) -> tuple[str, str, str]:
    """Compile `pipeline` with `profile`'s cluster settings and `overrides` and upload it as the
    version named after the code version and the IR (reused when that version exists); without KFP
    caching, another IR (caching is set per task in it), marked `-nocache`.
    -> (pipeline id, version id, name)."""
    from pipelines.compile import compile_pipeline  # kfp: imported only when submitting
    from pipelines.retraining import RETRAINING_PIPELINE_NAME
    from pipelines.training import PIPELINE_NAME

    name = {"training": PIPELINE_NAME, "retraining": RETRAINING_PIPELINE_NAME}[pipeline]
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / f"{pipeline}.yaml", profile, pipeline, kfp_caching, overrides)
        version_name = pipeline_version_name(git_commit, package.read_bytes(), kfp_caching)
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            pipeline_id = client.upload_pipeline(str(package), pipeline_name=name,
                                                 description=f"thinkpipe {pipeline} DAG").pipeline_id
        version_id = _find_version(client, pipeline_id, version_name)
        if version_id is None:
            version_id = client.upload_pipeline_version(str(package), version_name,
                                                        pipeline_id=pipeline_id).pipeline_version_id
    return pipeline_id, version_id, version_name


def submit_run(client, *, pipeline: str, profile: str, experiment: str, namespace: str | None, job_name: str,
               params: dict, git_commit: str, service_account: str, kfp_caching: bool = True,
               overrides: list[str] | tuple[str, ...] = ()) -> Submitted:
    pipeline_id, version_id, version_name = upload_version(client, pipeline, profile, git_commit, kfp_caching,
                                                           overrides)
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    run = client.run_pipeline(experiment_id, job_name, params=params, pipeline_id=pipeline_id,
                              version_id=version_id, service_account=service_account)
    return Submitted(pipeline_id, version_id, version_name, experiment_id, run_id=run.run_id)


def schedule_retraining(client, *, profile: str, experiment: str, namespace: str | None, job_name: str,
                        cron: str, params: dict, git_commit: str, service_account: str,
                        kfp_caching: bool = True, overrides: list[str] | tuple[str, ...] = ()) -> Submitted:
    pipeline_id, version_id, version_name = upload_version(client, "retraining", profile, git_commit, kfp_caching,
                                                           overrides)
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    recurring = client.create_recurring_run(
        experiment_id, job_name, description="retrain when the DVC data pin changes; promote only if better",
        cron_expression=kfp_cron(cron), max_concurrency=1, no_catchup=True, params=params,
        pipeline_id=pipeline_id, version_id=version_id, service_account=service_account)
    return Submitted(pipeline_id, version_id, version_name, experiment_id, recurring_run_id=recurring.recurring_run_id)
