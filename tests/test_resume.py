"""A training run killed with SIGKILL resumes from its last checkpoint and ends exactly where an
uninterrupted run with the same seed ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from model_src.data.generate import GeneratorConfig, generate_corpus
from model_src.train.checkpoint import list_checkpoints, load_meta
from tests.conftest import ROOT

DRIVER = [sys.executable, str(ROOT / "tests" / "resume_driver.py")]


def _run(data, ckpt, result, kill_after_step: int | None = None) -> tuple[int, list[int]]:
    """(exit code, the steps the run trained)."""
    proc = subprocess.Popen([*DRIVER, str(data), str(ckpt), str(result)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    steps = []
    for line in proc.stdout:
        if line.startswith("step "):
            steps.append(int(line.split()[1]))
            if kill_after_step is not None and steps[-1] >= kill_after_step:
                os.kill(proc.pid, signal.SIGKILL)
                break
    return proc.wait(), steps


def test_sigkilled_training_resumes_to_the_same_result(tmp_path):
    generate_corpus(tmp_path / "data", GeneratorConfig(rows={"stem": 24}))
    code, steps = _run(tmp_path / "data", tmp_path / "ck-straight", tmp_path / "straight.json")
    assert code == 0 and steps == list(range(60))

    code, steps = _run(tmp_path / "data", tmp_path / "ck-killed", tmp_path / "killed.json", kill_after_step=22)
    assert code == -signal.SIGKILL and not (tmp_path / "killed.json").exists()
    saved = list_checkpoints(tmp_path / "ck-killed")
    last = load_meta(saved[-1])["step"]
    assert 20 <= last <= steps[-1] + 1 and len(saved) <= 2  # older checkpoints pruned

    code, steps = _run(tmp_path / "data", tmp_path / "ck-killed", tmp_path / "killed.json")
    assert code == 0 and steps == list(range(last, 60))  # resumed at the checkpoint, not from scratch
    straight = json.loads((tmp_path / "straight.json").read_text())
    resumed = json.loads((tmp_path / "killed.json").read_text())
    assert resumed["final_loss"] == straight["final_loss"]
    assert resumed["first_loss"] == straight["first_loss"]  # the loss history survived the kill
    assert resumed["checksum"] == straight["checksum"]      # bit-identical parameters


@pytest.mark.slow  # 34 s: a SIGKILLed training resumes (above) and a failed pipeline resumes (test_pipeline_e2e) by default
def test_killed_stage_resumes_its_own_mlflow_run(tmp_path):
    """Kill the pretrain stage mid-training; the re-run, by another pipeline run, continues the same
    MLflow run from the last checkpoint and ends with the metrics of an uninterrupted run, and the
    killed pipeline's parent run, left RUNNING by the kill, is marked KILLED with a link to the
    pipeline run that took its work over."""
    import time

    import mlflow

    from model_src.config import load_config
    from model_src.data.curate import curate
    from model_src.data.schema import SPLITS
    from model_src.stages import init

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "THINKPIPE_CHECKPOINT_ROOT": str(tmp_path / "ckpt"),
           "MLFLOW_DISABLE_TELEMETRY": "true", "THINKPIPE_PIPELINE_RUN": "p-1"}
    cfg = load_config("tiny", ["pretrain.num_steps=50", "pretrain.checkpoint_every=10", "experiment=resume-test"])
    generate_corpus(tmp_path / "raw", GeneratorConfig(rows={"stem": 40, "digits": 40}))
    curate(tmp_path / "raw", {n: tmp_path / "cur" / n for n in (*SPLITS, "report")}, cfg.curate, validate=False)
    mlflow.set_tracking_uri(tracking)
    # artifacts in tmp_path, not in the default ./mlruns of the cwd (the repo)
    mlflow.MlflowClient(tracking).create_experiment("resume-test", artifact_location=(tmp_path / "art").as_uri())
    os.environ["MLFLOW_TRACKING_URI"] = tracking
    scopes = {}
    try:  # data_hash "" skips the pin check: this corpus is a small one made here
        for pipeline_run in ("p-1", "p-2"):
            lineage, scopes[pipeline_run] = init.run(
                config_json=cfg.to_json(), data_dir=str(tmp_path / "raw"), git_commit="c", data_hash="", data_rev="r",
                image="i", pipeline_run_name=pipeline_run)
        (tmp_path / "lineage.json").write_text(lineage.to_json())
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
    args = [sys.executable, str(ROOT / "tests" / "stage_driver.py"), str(tmp_path / "lineage.json"),
            str(tmp_path / "cur" / "pretrain")]

    def metrics_of(out: str, pipeline_run: str = "p-1") -> dict:
        proc = subprocess.run([*args, out], cwd=ROOT, env={**env, "THINKPIPE_PIPELINE_RUN": pipeline_run},
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = next(l for l in proc.stdout.splitlines() if l.startswith("METRICS "))
        return json.loads(line[len("METRICS "):])

    straight = metrics_of(str(tmp_path / "straight"))
    assert not list((tmp_path / "ckpt").rglob("step-*"))  # a finished stage cleans its checkpoints

    victim = subprocess.Popen([*args, str(tmp_path / "killed")], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "ckpt").rglob("step-00000020")) and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    checkpoint = sorted((tmp_path / "ckpt").rglob("step-*"))[-1]
    run_id = load_meta(checkpoint)["run_id"]

    resumed = metrics_of(str(tmp_path / "killed"), "p-2")  # another pipeline run takes the work over
    from model_src.golden import is_timing

    assert {k: v for k, v in resumed.items() if not is_timing(k)} == {k: v for k, v in straight.items() if not is_timing(k)}
    client = mlflow.MlflowClient(tracking)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["thinkpipe.resumed"] == "true"
    assert run.data.tags["mlflow.parentRunId"] == scopes["p-2"].parent_run_id
    killed = client.get_run(scopes["p-1"].parent_run_id)  # the SIGKILLed pipeline's parent
    assert killed.info.status == "KILLED"
    assert killed.data.tags["thinkpipe.taken_over_by"] == scopes["p-2"].parent_run_id
    assert killed.data.tags["thinkpipe.taken_over_by.pipeline_run"] == "p-2"
    assert client.get_run(scopes["p-2"].parent_run_id).info.status == "RUNNING"  # the live one is untouched
    history = {m.step: m.value for m in client.get_metric_history(run_id, "loss")}
    assert set(history) == set(range(50))  # one run holds the whole loss curve, before and after the kill
    # every checkpoint is also an MLflow LoggedModel of the run (the kill may beat step 20's upload)
    checkpoints = {int(m.tags["thinkpipe.step"]): m for m in mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list") if m.source_run_id == run_id}
    assert {10, 30, 40} <= set(checkpoints) <= {10, 20, 30, 40}
    for step, logged in checkpoints.items():
        if step == 20 and str(logged.status) == "PENDING":  # the SIGKILL landed mid-upload
            continue
        assert logged.name == f"pretrain-step-{step}" and str(logged.status) == "READY"
        [loss] = [m for m in logged.metrics if m.key == "loss"]
        assert loss.step == step - 1 and loss.value == pytest.approx(history[step - 1])  # the step that made it
    weights = Path(mlflow.artifacts.download_artifacts(f"models:/{checkpoints[40].model_id}", dst_path=str(tmp_path / "m40")))
    assert json.loads((weights / "config.json").read_text())["architectures"] == ["Glm4vForConditionalGeneration"]


def test_rl_resume_continues_curriculum_sampler_and_policy(tmp_path):
    """An RL run that dies after iteration 3 resumes from its iteration-2 checkpoint and ends with
    the parameters, curriculum and metrics of an uninterrupted run."""
    import pyarrow.parquet as pq
    import pytest
    import torch

    from model_src.config import load_config
    from model_src.model.build import build_model, build_processor, train_tokenizer
    from model_src.rl.loop import train_grpo
    from tests.conftest import digit_share

    generate_corpus(tmp_path / "raw", GeneratorConfig(rows={"stem": 12, "digits": 12}))
    rows = pq.read_table(tmp_path / "raw" / "stem-train.parquet").to_pylist() + \
        pq.read_table(tmp_path / "raw" / "digits-train.parquet").to_pylist()
    cfg = load_config("tiny", ["rlcs.num_iterations=5", "rlcs.checkpoint_every=2", "rlcs.max_new_tokens=8",
                               "rlcs.force_answer_tokens=0"])
    tokenizer = train_tokenizer([r["caption"] for r in rows], 400)
    processor = build_processor(tokenizer, cfg.model)

    def run(ckpt, crash_after=None):
        model = build_model(cfg.model, tokenizer, seed=0)
        seen = []

        def log(metrics, iteration):
            seen.append(iteration)
            if crash_after is not None and iteration == crash_after:
                raise RuntimeError("simulated crash")

        summary, curriculum = train_grpo(model, processor, rows, cfg.rlcs, 7, log, checkpoint_dir=ckpt,
                                         checkpoint_meta={"run_id": "r"}, reward_fn=digit_share)
        return model, summary, curriculum, seen

    straight_model, straight, straight_cur, _ = run(tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "b", crash_after=3)
    model, summary, curriculum, seen = run(tmp_path / "b")
    assert seen == [2, 3, 4]  # resumed at the iteration-2 checkpoint
    assert summary == straight
    assert curriculum.state_dict() == straight_cur.state_dict()
    for (name, p), q in zip(model.named_parameters(), straight_model.parameters()):
        assert torch.equal(p, q), name
    assert any(not torch.equal(p, q) for p, q in zip(straight_model.parameters(),
                                                     build_model(cfg.model, tokenizer, seed=0).parameters()))


class _RunsCode:
    """A pickle that would run code when loaded unsafely (it would create the marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def test_resume_skips_a_corrupt_or_code_carrying_checkpoint_for_the_newest_good_one(tmp_path, capsys):
    import torch

    from model_src.train.checkpoint import resume_latest, save_checkpoint

    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        return model, torch.optim.AdamW(model.parameters())

    model, optimizer = fresh()
    folder = tmp_path / "ckpt"
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(float(step))
        save_checkpoint(folder, step, model, optimizer, None, {"run_id": "r"}, keep=3)
    (folder / ".tmp-step-00000004-999").mkdir()  # a writer killed mid-checkpoint
    # step 3: truncated on disk; step 2: replaced by a pickle that runs code when unpickled
    state3 = folder / "step-00000003" / "state.pt"
    state3.write_bytes(state3.read_bytes()[:100])
    marker = tmp_path / "ran"
    torch.save({"model": _RunsCode(str(marker))}, folder / "step-00000002" / "state.pt")
    meta2 = json.loads((folder / "step-00000002" / "meta.json").read_text())
    del meta2["state_sha256"]  # even with no checksum to catch it, loading runs no code
    (folder / "step-00000002" / "meta.json").write_text(json.dumps(meta2))

    model, optimizer = fresh()
    path, meta = resume_latest(folder, model, optimizer, None)
    assert path.name == "step-00000001" and meta["step"] == 1
    assert model.weight.detach()[0, 0].item() == 1.0  # step 1's weights
    assert not marker.exists()  # the hostile pickle was refused, not run
    assert not list(folder.glob(".tmp-*"))  # the killed writer's leftovers are gone
    printed = capsys.readouterr().out
    assert "step-00000003: state.pt does not match the sha256" in printed and "step-00000002: cannot be read" in printed
