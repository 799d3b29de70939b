"""Whether the pipeline that opened a parent run is still alive, and closing the parents of dead ones.

A pipeline's parent run stays RUNNING while its stages run and is closed by the exit handler
(finish.py). Killed outright (the launcher SIGKILLed, the machine gone), nothing closes it; killed
*during* a stage, the stage's run is found RUNNING by whoever takes its work over (runner.py), and
its parent with it. Killed *between* two stages, no stage run is left behind: only this module
finds it. `init` calls `close_dead_pipelines` when a new pipeline run starts on the same store.

Locally the owner is the `thinkpipe run` process: its host, the kernel's boot id, its pid and its
start time (so a reused pid or a reboot never reads as alive). On a cluster it is the pipeline's
Argo workflow (the pod's namespace and workflow label): dead when its phase is Succeeded, Failed or
Error, or when it is gone (the Role grants `get` on workflows.argoproj.io). A run whose owner cannot
be judged here (another host; an API that does not answer) is left alone.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from model_src.names import (LAUNCHER_PID_ENV, NAMESPACE_ENV, OWNER_TAG, PIPELINE_RUN_ENV, PIPELINE_RUN_TAG,
                             PIPELINE_STAGE, STAGE_TAG, TAKEN_OVER_BY_TAG)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or ""."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name; 22nd overall


def owner(pid: int | None = None) -> str:
    """This pipeline run's owner as a tag value: the launcher process ($THINKPIPE_LAUNCHER_PID, set
    by `thinkpipe run`), else on a cluster the Argo workflow ($THINKPIPE_NAMESPACE and the workflow
    name in $THINKPIPE_PIPELINE_RUN, both set from the pod's fields), else ""."""
    pid = pid if pid is not None else int(os.environ.get(LAUNCHER_PID_ENV) or 0)
    if not pid:
        namespace, workflow = os.environ.get(NAMESPACE_ENV), os.environ.get(PIPELINE_RUN_ENV)
        return json.dumps({"namespace": namespace, "workflow": workflow}, sort_keys=True) if namespace and workflow else ""
    return json.dumps({"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "start": _start_ticks(pid)},
                      sort_keys=True)


ENDED_PHASES = ("Succeeded", "Failed", "Error")  # an Argo workflow's phases once it has stopped


def workflow_alive(namespace: str, name: str, api=None) -> bool | None:
    """Whether the Argo workflow still runs (None: the API could not say)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from model_src.cluster.training_job import kubernetes_api_client

    try:
        api = api or client.CustomObjectsApi(kubernetes_api_client())
        workflow = api.get_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "workflows", name)
    except ApiException as exc:
        return False if exc.status == 404 else None
    except Exception:  # noqa: BLE001 - no cluster config, no answer: not ours to judge
        return None
    return (workflow.get("status") or {}).get("phase", "") not in ENDED_PHASES


def alive(owner_tag: str, api=None) -> bool | None:
    """True/False when this machine can tell whether the owner still runs; None when it cannot."""
    try:
        who = json.loads(owner_tag)
    except ValueError:
        return None
    if "workflow" in who:
        return workflow_alive(who["namespace"], who["workflow"], api)
    if who.get("host") != socket.gethostname():
        return None
    if who.get("boot_id") != _boot_id():
        return False  # the machine rebooted since: every process of then is gone
    return bool(who.get("start")) and _start_ticks(int(who["pid"])) == who["start"]


def close_dead_pipelines(client, experiment_id: str, parent_run_id: str, pipeline_run: str, api=None) -> list[str]:
    """Mark KILLED every RUNNING pipeline parent run of the experiment whose owner is dead, tagged
    with the pipeline run that found it (`thinkpipe.taken_over_by`); returns their run ids."""
    running = client.search_runs([experiment_id], f"tags.`{STAGE_TAG}` = '{PIPELINE_STAGE}' "
                                                  "AND attributes.status = 'RUNNING'")
    closed = []
    for run in running:
        if run.info.run_id == parent_run_id or alive(run.data.tags.get(OWNER_TAG, ""), api) is not False:
            continue
        client.set_tag(run.info.run_id, TAKEN_OVER_BY_TAG, parent_run_id)
        client.set_tag(run.info.run_id, f"{TAKEN_OVER_BY_TAG}.pipeline_run", pipeline_run)
        client.set_tag(run.info.run_id, f"{TAKEN_OVER_BY_TAG}.why", "its pipeline (process or workflow) is gone")
        client.set_terminated(run.info.run_id, "KILLED")
        print(f"marked pipeline run {run.data.tags.get(PIPELINE_RUN_TAG, run.info.run_id)} ({run.info.run_id}) "
              f"KILLED: its pipeline (process or workflow) is gone; found by {pipeline_run}", flush=True)
        closed.append(run.info.run_id)
    return closed
