"""Supervised training through DeepSpeed on CPU (gloo): two processes with the same global batch
train like one process. Tolerances: losses rel 1e-4; every weight tensor's final value differs by
at most 1% of the size of its own update over the run (Adam amplifies reduction-order noise on
near-zero gradients, so an absolute bound on weights would be arbitrary)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from model_src.data.generate import GeneratorConfig, generate_corpus
from tests.conftest import ROOT
from model_src.train.distributed import free_port


def _train(nproc: int, data, out, zero_stage: int, pack_length: int = 0, *extra: str,
           expect_code: int = 0, micro_batch: int = 0) -> tuple[dict, dict] | None:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(ROOT / "tests" / "ds_driver.py"), str(data), str(out), str(zero_stage), str(pack_length), *extra]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "DS_DRIVER_MICRO_BATCH": str(micro_batch)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert (proc.returncode == 0) == (expect_code == 0), (proc.stdout + proc.stderr)[-5000:]
    if expect_code:
        return None
    return json.loads((out / "result.json").read_text()), torch.load(out / "weights.pt")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    generate_corpus(folder, GeneratorConfig(rows={"stem": 16, "digits": 12, "chart": 8}))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage,pack_length", [(0, 0), (2, 0), (2, 384), (3, 0)])
def test_two_processes_train_like_one_with_the_same_global_batch(data, tmp_path, zero_stage, pack_length):
    one, one_weights = _train(1, data, tmp_path / "one", zero_stage, pack_length)
    two, two_weights = _train(2, data, tmp_path / "two", zero_stage, pack_length)
    assert (one["world"], two["world"]) == (1, 2)
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4)
    assert one["losses"][-1] < one["losses"][0]
    for name, initial in one_weights["initial"].items():
        assert torch.equal(two_weights["initial"][name], initial), name  # same start
        update = (one_weights["final"][name] - initial).norm()
        gap = (two_weights["final"][name] - one_weights["final"][name]).norm()
        assert gap <= 0.01 * update + 1e-7, (name, float(gap), float(update))


@pytest.mark.slow
def test_two_processes_accumulating_micro_batches_train_like_one_whole_batch(data, tmp_path):
    """4 rows a step: one process, one forward; two processes, two micro-batches of one row each
    (DeepSpeed's gradient accumulation). The same losses and updates as in the test above."""
    one, one_weights = _train(1, data, tmp_path / "one", 2)
    two, two_weights = _train(2, data, tmp_path / "two", 2, micro_batch=1)
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4)
    for name, initial in one_weights["initial"].items():
        update = (one_weights["final"][name] - initial).norm()
        gap = (two_weights["final"][name] - one_weights["final"][name]).norm()
        assert gap <= 0.01 * update + 1e-7, (name, float(gap), float(update))


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_crashed_deepspeed_run_resumes_from_its_checkpoint_to_the_same_weights(data, tmp_path, zero_stage):
    straight, straight_weights = _train(1, data, tmp_path / "straight", zero_stage)
    checkpoints = tmp_path / "ckpt"
    _train(1, data, tmp_path / "crashed", zero_stage, 0, str(checkpoints), "5", expect_code=3)  # dies after step 5
    assert (checkpoints / "deepspeed" / "latest").read_text().strip() == "step-00000004"
    resumed, resumed_weights = _train(1, data, tmp_path / "resumed", zero_stage, 0, str(checkpoints))
    assert len(resumed["losses"]) == 2  # steps 5 and 6 only: it continued from step 4
    assert resumed["losses"] == pytest.approx(straight["losses"][4:], rel=1e-6)
    for name, weight in straight_weights["final"].items():
        torch.testing.assert_close(resumed_weights["final"][name], weight, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.slow
def test_deepspeed_resume_skips_a_tampered_tag_for_the_newest_that_verifies(data, tmp_path):
    """DeepSpeed's loader unpickles: a run loads only a tag whose files match the sha256 it recorded
    when it wrote them. Fault: the newest tag's model file is altered on the shared volume; the
    resume skips it (saying why) and continues from the older tag, so it trains steps 3-6."""
    checkpoints = tmp_path / "ckpt"
    _train(1, data, tmp_path / "crashed", 2, 0, str(checkpoints), "5", expect_code=3)  # tags step 2 and step 4
    newest = checkpoints / "deepspeed" / "step-00000004"
    assert (newest / "thinkpipe-checksums.json").is_file()
    victim = next(p for p in sorted(newest.rglob("*model_states.pt")))
    victim.write_bytes(victim.read_bytes() + b"\x00")
    resumed, _ = _train(1, data, tmp_path / "resumed", 2, 0, str(checkpoints))
    assert len(resumed["losses"]) == 4  # steps 3-6: it continued from step 2
