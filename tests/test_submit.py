"""`thinkpipe submit` / `schedule` through the real kfp.Client against a loopback stand-in of the
KFP v2beta1 API (tests/kfp_api_server.py): what a cluster would receive, without a cluster."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from components import image
from components.image import BASE_IMAGE
from model_src.config import load_config
from model_src.lineage import git_commit
from model_src.secret_scan import find_secrets
from pipelines.compile import compile_pipeline
from pipelines.submit import pipeline_version_name
from tests.conftest import ROOT
from tests.kfp_api_server import KfpApiServer


@pytest.fixture()
def kfp_api():
    with KfpApiServer() as server:
        yield server


# `thinkpipe` with components/image.py's SOURCE_SHA256 set to `pinned_sources` ("here": this
# checkout's hash, i.e. an image built from this very code was pinned; the committed pin may lag)
PINNED_CLI = ("import sys, components.image as image; from model_src.image_source import source_sha256; "
              "image.SOURCE_SHA256 = source_sha256() if sys.argv[1] == 'here' else sys.argv[1]; "
              "from pipelines.cli import main; sys.exit(main(sys.argv[2:]))")


def thinkpipe(tmp_path, *args: str, pinned_sources: str = "here") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PINNED_CLI, pinned_sources, *args], cwd=ROOT, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # no kube config, no tokens


def test_submit_uploads_a_version_per_commit_and_starts_a_run(kfp_api, tmp_path):
    first = thinkpipe(tmp_path, "submit", "--host", kfp_api.url, "--run-name", "nightly-1", "--experiment", "team-a")
    assert first.returncode == 0, first.stderr[-3000:]
    state = kfp_api.state
    # KFP's upload of a new pipeline also makes a first version named after it; runs use ours
    [version] = [v for v in state.versions.values() if v["display_name"] != "thinkpipe-training"]
    fresh = compile_pipeline(tmp_path / "training.yaml", "glm4v-9b", "training").read_text()
    assert version["display_name"] == pipeline_version_name(git_commit(ROOT), fresh.encode())
    assert version["display_name"].startswith("0.1.0-")
    assert yaml.safe_load_all(version["package"]) and version["package"] == fresh
    [run] = state.runs
    assert run["display_name"] == "nightly-1" and run["service_account"] == "thinkpipe-pipeline"
    assert run["pipeline_version_reference"] == {"pipeline_id": version["pipeline_id"],
                                                 "pipeline_version_id": version["pipeline_version_id"]}
    params = run["runtime_config"]["parameters"]
    pin = yaml.safe_load((ROOT / "data.dvc").read_text())["outs"][0]["md5"]
    assert params["data_hash"] == pin and params["data_dir"] == f"/checkpoints/data/{pin.removesuffix('.dir')}"
    assert params["image"] == BASE_IMAGE and params["git_commit"] == git_commit(ROOT)
    assert json.loads(params["config_json"]) == load_config("glm4v-9b").to_dict()
    assert [e["display_name"] for e in state.experiments.values()] == ["team-a"]

    again = thinkpipe(tmp_path, "submit", "--host", kfp_api.url, "--run-name", "nightly-2", "--experiment", "team-a")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(state.versions) == 2 and len(state.pipelines) == 1 and len(state.experiments) == 1  # reused
    assert [r["display_name"] for r in state.runs] == ["nightly-1", "nightly-2"]
    sent = json.dumps(state.runs) + "".join(v["package"] for v in state.versions.values())
    assert find_secrets(sent) == []


def test_schedule_creates_a_recurring_run_of_the_retraining_dag(kfp_api, tmp_path):
    proc = thinkpipe(tmp_path, "schedule", "--host", kfp_api.url, "--cron", "0 3 * * *",
                     "--data-repo", "https://git.example.com/thinkpipe.git", "--name", "nightly")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [recurring] = kfp_api.state.recurring_runs
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert recurring["no_catchup"] is True and recurring["max_concurrency"] == 1 and recurring["mode"] == "ENABLE"
    params = recurring["runtime_config"]["parameters"]
    assert params["data_repo"] == "https://git.example.com/thinkpipe.git" and params["data_branch"] == "main"
    assert params["data_root"] == "/checkpoints/data"
    [version] = [v for v in kfp_api.state.versions.values() if v["display_name"] != "thinkpipe-retraining"]
    [pipeline] = kfp_api.state.pipelines.values()
    assert recurring["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    assert pipeline["display_name"] == "thinkpipe-retraining"
    assert version["package"] == compile_pipeline(tmp_path / "r.yaml", "glm4v-9b", "retraining").read_text()


@pytest.mark.parametrize("args, message", [
    (("schedule", "--cron", "every night"), "cron expression 'every night'"),
    (("submit", "--set", "model.init_from=s3://admin:hunter2hunter2@models/glm"), "refusing to submit"),
    (("submit", "--set", "cluster.stages.sft.gpus=-1"), "cluster.stages.sft.gpus"),
])
def test_bad_requests_fail_before_anything_is_sent(kfp_api, tmp_path, args, message):
    proc = thinkpipe(tmp_path, args[0], "--host", kfp_api.url, *args[1:])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not [r for r in kfp_api.state.requests if r[0] == "POST"]


def test_submit_refuses_an_image_built_from_other_sources_and_compile_warns(kfp_api, tmp_path, monkeypatch, capsys):
    """The image is the code: a pin whose recorded sources are not this checkout's would run other
    code than the git commit the run records; submit (and schedule, through the same parameters)
    refuses it, naming the fix."""
    proc = thinkpipe(tmp_path, "submit", "--host", kfp_api.url, pinned_sources="0" * 64)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "was built from sources 000000000000" in proc.stderr and "`make image`" in proc.stderr
    assert not [r for r in kfp_api.state.requests if r[0] == "POST"]
    # compile warns (in this process: the same CLI function, without another interpreter's start-up)
    from components import image as pin
    from pipelines.cli import main

    monkeypatch.setattr(pin, "SOURCE_SHA256", "0" * 64)
    assert main(["compile", "--out-dir", str(tmp_path / "ir")]) == 0
    assert "warning: the pinned image" in capsys.readouterr().err
    # (a pin of this checkout's sources compiles without the warning: the other submit tests run so)


@pytest.mark.slow  # a third submit with its own compile (16 s); the default run is over its time budget
def test_the_image_repository_is_configuration(kfp_api, tmp_path):
    """A team that pushed the pinned image to its own registry names it in the profile: every pod
    and the run's image parameter use it, with the pinned digest."""
    repository = "registry.internal:5000/ml/thinkpipe"
    proc = thinkpipe(tmp_path, "submit", "--host", kfp_api.url, "--set", f"cluster.image_repository={repository}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = kfp_api.state.runs
    assert run["runtime_config"]["parameters"]["image"] == BASE_IMAGE.replace(image.REPOSITORY, repository)
    [version] = [v for v in kfp_api.state.versions.values() if v["display_name"] != "thinkpipe-training"]
    spec = next(yaml.safe_load_all(version["package"]))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {run["runtime_config"]["parameters"]["image"]}
    assert version["display_name"] != pipeline_version_name(  # another IR, another version
        git_commit(ROOT), compile_pipeline(tmp_path / "t.yaml", "glm4v-9b", "training").read_bytes())
    bad = thinkpipe(tmp_path, "submit", "--host", kfp_api.url, "--set", "cluster.image_repository=Not A Repo")
    assert bad.returncode == 2 and "cluster.image_repository" in bad.stderr


def _cached_tasks(package: str) -> dict[str, bool]:
    """{task: KFP caching on} over every DAG of a compiled pipeline (the root and the exit handler's)."""
    spec = next(yaml.safe_load_all(package))
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {name: bool(task.get("cachingOptions", {}).get("enableCache")) for dag in dags
            for name, task in dag["tasks"].items()}


@pytest.mark.slow  # a rare option (21 s, three submits); submit itself stays in the default run
def test_submit_no_cache_runs_a_pipeline_version_without_kfp_caching(kfp_api, tmp_path):
    """KFP caching is a per-task IR setting (a run's inputs cannot turn it off): --no-cache runs a
    `-nocache` version of the same code in which no task is cached; a second one is not a cache hit."""
    for name in ("plain", "fresh-1", "fresh-2"):
        proc = thinkpipe(tmp_path, "submit", "--host", kfp_api.url, "--run-name", name,
                         *(["--no-cache"] if name.startswith("fresh") else []))
        assert proc.returncode == 0, proc.stderr[-3000:]
    state = kfp_api.state
    versions = {v["pipeline_version_id"]: v for v in state.versions.values() if v["display_name"] != "thinkpipe-training"}
    runs = {r["display_name"]: versions[r["pipeline_version_reference"]["pipeline_version_id"]] for r in state.runs}
    commit = git_commit(ROOT)
    assert runs["plain"]["display_name"] == pipeline_version_name(commit, runs["plain"]["package"].encode())
    assert runs["fresh-1"]["display_name"] == runs["fresh-2"]["display_name"] == pipeline_version_name(
        commit, runs["fresh-1"]["package"].encode(), kfp_caching=False)  # reused
    assert runs["fresh-1"]["display_name"].endswith("-nocache")
    cached = _cached_tasks(runs["plain"]["package"])
    assert cached["curate"] and cached["export"] and not cached["init"]  # the registry's choice
    uncached = _cached_tasks(runs["fresh-1"]["package"])
    assert set(uncached) == set(cached) and not any(uncached.values())
    assert all(r["runtime_config"]["parameters"]["use_cache"] is False for r in state.runs if r["display_name"] != "plain")


def test_the_kfp_stand_in_rejects_a_field_the_api_does_not_have(kfp_api):
    """The stand-in bites: a misspelt field (top level or nested) is a 400 naming it, as the real
    API with strict validation answers; the fields kfp.Client sends pass (the tests above)."""
    from tests.loopback import post_json

    def post(path: str, body: dict) -> tuple[int, dict]:
        return post_json(f"{kfp_api.url}/apis/v2beta1{path}", body)

    good = {"display_name": "r", "service_account": "sa", "runtime_config": {"parameters": {"x": 1}},
            "pipeline_version_reference": {"pipeline_id": "p", "pipeline_version_id": "v"}}
    assert post("/runs", good)[0] == 200
    code, reply = post("/runs", {**good, "service_acount": "sa"})
    assert code == 400 and "service_acount (not a field of V2beta1Run)" in reply["error"]
    code, reply = post("/recurringruns", {"display_name": "n", "trigger": {"cron_schedule": {"crontab": "0 3 * * *"}}})
    assert code == 400 and "trigger.cron_schedule.crontab (not a field of V2beta1CronSchedule)" in reply["error"]
    assert len(kfp_api.state.runs) == 1 and not kfp_api.state.recurring_runs  # nothing kept from a rejected call


def test_the_kfp_stand_in_refuses_a_filter_key_the_api_does_not_know(kfp_api):
    """A list filter on a key the API server does not map (or a misspelt predicate field) is a 400,
    as the real server answers; kfp.Client's own filters (display_name, string_value) pass above."""
    import urllib.error
    import urllib.parse
    import urllib.request

    def get(resource: str, predicate: dict) -> int:
        query = urllib.parse.urlencode({"filter": json.dumps({"predicates": [predicate]})})
        try:
            with urllib.request.urlopen(f"{kfp_api.url}/apis/v2beta1/{resource}?{query}") as reply:
                return reply.status
        except urllib.error.HTTPError as exc:
            return exc.code

    ok = {"key": "display_name", "operation": "EQUALS", "string_value": "thinkpipe-training"}
    assert get("pipelines", ok) == 200 and get("experiments", ok) == 200
    assert get("pipelines", {**ok, "key": "displayName"}) == 400  # the JSON spelling is not a filter key
    assert get("pipelines", {**ok, "key": "pipeline_name"}) == 400
    assert get("experiments", {"key": "name", "operation": "EQUALS", "strValue": "x"}) == 400
    assert get("pipelines", {**ok, "operation": "LIKE"}) == 400
