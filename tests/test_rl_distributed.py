"""Data-parallel GRPO: two processes (gloo, CPU) on the same global batch train like one process.

Each rank rolls out half of every draw's prompt groups, from per-group seeds; rewards are gathered
so selection, curriculum and metrics see the whole step; gradients are summed before one identical
step. The two runs' weights, curriculum states and per-iteration metrics agree to float rounding:
a gradient summed over ranks adds in another order than one summed in one process, and Adam's
normalised step turns those 1e-7 gradient differences into weight differences of 1e-5 to 1e-4 (the
summation order, and so the size, depends on the compute threads: 6.7e-5 seen with one), well under
one step's size (lr 3e-3). The check allows a tenth of a step; ranks that skipped the gradient sum
would differ by whole steps."""

from __future__ import annotations

import math

import pytest
import torch

from model_src.config import load_config
from tests.conftest import digit_share

OVERRIDES = ["rlcs.num_iterations=3", "rlcs.prompts_per_iteration=4", "rlcs.group_size=4", "rlcs.max_new_tokens=6",
             "rlcs.force_answer_tokens=3", "rlcs.lr=3e-3", "rlcs.checkpoint_every=0", "rlcs.offline_k=2"]


def rl_rows() -> list[dict]:
    from model_src.data.generate import GeneratorConfig, domain_rows

    return domain_rows(GeneratorConfig(rows={"digits": 14}), "digits", "train")


def train_policy(folder: str, rows: list[dict], overrides: list[str] = (), on_log=None, checkpoint_dir=None) -> dict:
    """GRPO on the policy saved in `folder`; what the runs are compared on."""
    from model_src.model.build import load_model_and_processor
    from model_src.rl.loop import train_grpo

    model, processor = load_model_and_processor(folder)
    history: list[dict] = []

    def log(metrics: dict, iteration: int) -> None:
        history.append(metrics)
        if on_log is not None:
            on_log(metrics, iteration)

    summary, curriculum = train_grpo(model, processor, rows, load_config("tiny", OVERRIDES + list(overrides)).rlcs,
                                     11, log, reward_fn=digit_share, checkpoint_dir=checkpoint_dir)
    return {"weights": {k: v.detach().float().clone() for k, v in model.state_dict().items()}, "history": history,
            "curriculum": curriculum.state_dict(), "summary": summary}




def save_policy(folder) -> object:
    """A random tiny policy and its processor, saved to `folder`; returns the processor."""
    from model_src.model.build import build_model, build_processor, train_tokenizer

    tiny = load_config("tiny")
    processor = build_processor(train_tokenizer([r["question"] for r in rl_rows()], 300), tiny.model)
    build_model(tiny.model, processor.tokenizer, seed=0).save_pretrained(folder)
    processor.save_pretrained(folder)
    return processor


def _rank(rank: int, store: str, folder: str, rows: list[dict], results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        results[rank] = train_policy(folder, rows)
    finally:
        dist.destroy_process_group()


def _close(a, b, path: str = "", weight_atol: float = 3e-4) -> list[str]:
    """Where two nested results differ beyond float rounding (weights: `weight_atol`)."""
    if isinstance(a, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}/{k}", weight_atol)]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]", weight_atol)]
    if isinstance(a, torch.Tensor):
        return [] if torch.allclose(a, b, rtol=1e-4, atol=weight_atol) else [f"{path}: max diff {(a - b).abs().max():.3g}"]
    if isinstance(a, float):
        return [] if math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path):
    import torch.multiprocessing as mp

    from model_src.model.build import build_model

    rows = rl_rows()
    tiny = load_config("tiny")
    processor = save_policy(tmp_path / "policy")

    one = train_policy(str(tmp_path / "policy"), rows)
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path / "policy"), rows, results), nprocs=2, join=True)
    two = [results[0], results[1]]

    assert not _close(two[0], two[1]), "the two ranks disagree"
    differences = _close(one, two[0])
    assert not differences, differences[:10]
    # the run did something: weights moved, groups spread, and expansion drew more than a batch
    initial = build_model(tiny.model, processor.tokenizer, seed=0).state_dict()
    assert any(not torch.equal(initial[k], one["weights"][k]) for k in initial)
    assert all(h["effective_group_share"] > 0 for h in one["history"])
    assert one["summary"]["rollouts_total"] == sum(h["sampled_prompts"] for h in one["history"]) * 4


def test_a_groups_rollouts_depend_on_its_seed_not_on_the_batch_it_is_in():
    from model_src.data.generate import GeneratorConfig, domain_rows
    from model_src.model.build import build_model, build_processor, train_tokenizer
    from model_src.model.inputs import prompt_example
    from model_src.rl.rollout import TransformersEngine

    rows = domain_rows(GeneratorConfig(rows={"digits": 6}), "digits", "train")
    tiny = load_config("tiny")
    processor = build_processor(train_tokenizer([r["question"] for r in rows], 300), tiny.model)
    engine = TransformersEngine(build_model(tiny.model, processor.tokenizer, seed=0), processor)
    examples = [prompt_example(processor, r) for r in rows[:4]]
    kwargs = dict(n=3, max_new_tokens=8, do_sample=True, force_answer_tokens=3)
    together = engine.generate(examples, seeds=[10, 11, 12, 13], **kwargs)
    apart = [engine.generate([ex], seeds=[s], **kwargs) for ex, s in zip(examples, [10, 11, 12, 13])]
    assert together.texts == [t for ro in apart for t in ro.texts]
    assert len(set(together.texts)) > 4  # sampled: the rows of a group differ
    reseeded = engine.generate(examples[:1], seeds=[99], **kwargs)
    assert reseeded.texts != apart[0].texts
    with pytest.raises(ValueError, match="2 seeds for 3 examples"):
        from model_src.model.generate import generate

        generate(engine.model, processor, examples[:3], max_new_tokens=4, do_sample=True, seeds=[1, 2])


def _sync_rank(rank: int, store: str, folder: str, url: str, weights: str, done) -> None:
    import time

    import torch.distributed as dist

    from model_src.model.build import load_model_and_processor
    from model_src.rl.rollout import VLLMServerEngine

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model, processor = load_model_and_processor(folder)
        engine = VLLMServerEngine(model, processor, url=url, weights_dir=weights)
        engine.sync_weights(model)
        done[rank] = time.monotonic()
    finally:
        dist.destroy_process_group()


def test_a_shared_rollout_server_gets_one_weight_push_per_update_and_every_rank_waits_for_it(tmp_path):
    """On a cluster the job's ranks share one rollout server (a pod beside the job): their weights
    are equal after an update, so rank 0 writes them once and has the server reload them, while
    the other ranks wait until it has, so no rank rolls out from the old weights."""
    import json
    import time
    from http.server import BaseHTTPRequestHandler

    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    from tests.loopback import LoopbackServer

    loads: list[tuple[float, str]] = []

    class RolloutServerStandIn(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(1.0)  # a reload takes a while: the other rank must wait for it
            loads.append((time.monotonic(), body["path"]))
            data = json.dumps({"seconds": 1.0}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    save_policy(tmp_path / "policy")
    done = mp.Manager().dict()
    with LoopbackServer(RolloutServerStandIn) as server:
        mp.spawn(_sync_rank, args=(str(tmp_path / "store"), str(tmp_path / "policy"), server.url,
                                   str(tmp_path / "shared"), done), nprocs=2, join=True)
    [(loaded_at, path)] = loads  # one push, not one per rank
    assert path == str(tmp_path / "shared" / "policy.safetensors")
    assert min(done.values()) >= loaded_at  # neither rank went on before the server had the weights
    from model_src.model.build import load_model_and_processor

    model, _ = load_model_and_processor(str(tmp_path / "policy"))
    pushed = load_file(path)
    assert set(pushed) == set(model.state_dict()) and all(torch.equal(pushed[k], v) for k, v in model.state_dict().items())


def _torchrun(policy, out, overrides: list[str], nproc: int, env: dict | None = None) -> dict:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from model_src.train.distributed import free_port

    root = Path(__file__).resolve().parent.parent
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()),
           str(root / "tests" / "rl_driver.py"), str(policy), str(out), *overrides]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **(env or {})})
    return {"returncode": proc.returncode, "log": proc.stdout[-3000:] + proc.stderr[-3000:],
            "result": torch.load(out / "result.pt") if (out / "result.pt").exists() else None}


@pytest.mark.slow
def test_two_deepspeed_zero2_processes_train_like_one_plain_process(tmp_path):
    """ZeRO-2 shards gradients and optimizer states; each rank runs as many backward passes as the
    busiest one (zero-weight spares), and the result is the one process's. Weights to a tenth of
    one Adam step (3e-4 at lr 3e-3): the update here is split into micro-batches of 3 rollouts,
    and Adam's normalised step turns rounding-level gradients of rarely seen embedding rows into
    visible differences; every metric and the curriculum agree to 1e-4."""
    save_policy(tmp_path / "policy")
    one = train_policy(str(tmp_path / "policy"), rl_rows())
    run = _torchrun(tmp_path / "policy", tmp_path / "zero2", ["rlcs.deepspeed=true", "rlcs.zero_stage=2",
                                                               "rlcs.micro_batch_size=3"], nproc=2)
    assert run["returncode"] == 0, run["log"]
    differences = _close(one, run["result"])
    assert not differences, differences[:10]


@pytest.mark.slow
def test_a_killed_two_process_deepspeed_run_resumes_to_the_uninterrupted_result(tmp_path):
    save_policy(tmp_path / "policy")
    overrides = ["rlcs.deepspeed=true", "rlcs.zero_stage=2", "rlcs.checkpoint_every=1"]
    whole = _torchrun(tmp_path / "policy", tmp_path / "whole", overrides, nproc=2,
                      env={"RL_DRIVER_CHECKPOINTS": str(tmp_path / "ckpt-whole")})
    assert whole["returncode"] == 0, whole["log"]
    checkpoints = {"RL_DRIVER_CHECKPOINTS": str(tmp_path / "ckpt")}
    killed = _torchrun(tmp_path / "policy", tmp_path / "killed", overrides, nproc=2,
                       env={**checkpoints, "RL_DRIVER_CRASH_AFTER": "2"})
    assert killed["returncode"] != 0 and killed["result"] is None
    resumed = _torchrun(tmp_path / "policy", tmp_path / "resumed", overrides, nproc=2, env=checkpoints)
    assert resumed["returncode"] == 0, resumed["log"]
    assert "resuming from" in resumed["log"]
    # (the resumed process logged only the iterations after its checkpoint: compare the rest)
    differences = _close({k: v for k, v in whole["result"].items() if k != "history"},
                         {k: v for k, v in resumed["result"].items() if k != "history"})
    assert not differences, differences[:10]
    assert resumed["result"]["history"] == whole["result"]["history"][1:]
