"""The vLLM rollout engine against the transformers one, for real: a tiny model exported by the
real pipeline, both engines run by `tests/vllm_rollout_driver.py` under the serving venv's python
(vLLM lives only there), greedy rollouts compared token for token (forced answers included),
seeded sampled groups, and the weight sync after a perturbation of the policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TinyPipeline

SERVE_PYTHON = ROOT / ".venv-serve" / "bin" / "python"
# vLLM's CPU attention needs heads >= 32 wide: the tiny profile's are 16 (as in tests/test_serving.py)
SERVABLE_TINY = ("--set", "model.text_num_heads=2", "--set", "model.text_num_kv_heads=1",
                 "--set", "model.mrope_section=[2,3,3]")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SERVE_PYTHON.is_file(),
                                 reason=f"{SERVE_PYTHON} missing: vLLM runs only in the serving venv (`make serve-venv`)")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    pipeline = TinyPipeline(tmp_path_factory.mktemp("vllm-rollout-state"))
    result = pipeline.run("vllm-rollouts", *SERVABLE_TINY)
    assert result.returncode == 0, result.output[-5000:]
    [line] = [line for line in result.output.splitlines() if "exported folder" in line]
    folder = Path(line.split(":", 1)[1].strip())
    return folder if folder.is_absolute() else ROOT / folder


def _pyarrow_overlay(tmp_path: Path) -> Path:
    """`model_src.model.inputs` imports `model_src.data.schema`, which imports pyarrow; the serving
    venv has none. A folder holding only a link to this venv's pyarrow package lends it."""
    import pyarrow

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "pyarrow").symlink_to(Path(pyarrow.__file__).parent, target_is_directory=True)
    return overlay


def test_vllm_engine_matches_transformers_and_syncs_weights(exported, tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    proc = subprocess.run([str(SERVE_PYTHON), str(ROOT / "tests" / "vllm_rollout_driver.py"), "--folder", str(exported),
                           "--out", str(out), "--extra-sys-path", str(_pyarrow_overlay(tmp_path))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - started
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]
    report = json.loads(out.read_text())
    assert report["ok"]
    for label in ("greedy_long", "greedy_short"):
        assert all(report[label]["same"].values()), report[label]
    assert any(report["greedy_short"]["forced"])
    assert all(report["sync"]["synced_equals_perturbed"].values())
    assert not all(report["sync"]["perturbed_equals_before"].values())
    print(f"\nvLLM {report['vllm']} / transformers {report['transformers']}: driver {wall:.0f} s; timings (s): "
          + json.dumps({k: round(v, 3) for k, v in report["timings_s"].items()}), file=sys.stderr)


def _servable_policy():
    """A random tiny Glm4v whose attention heads vLLM's CPU kernels take, its processor, and image prompts."""
    from model_src.config import load_config
    from model_src.data.generate import GeneratorConfig, domain_rows
    from model_src.model.build import build_model, build_processor, train_tokenizer
    from model_src.model.inputs import prompt_example

    cfg = load_config("tiny", [s for s in SERVABLE_TINY if s != "--set"])
    rows = domain_rows(GeneratorConfig(rows={"digits": 12}), "digits", "train")
    processor = build_processor(train_tokenizer([t for r in rows for t in (r["question"], r["reasoning"])], 300),
                                cfg.model)
    model = build_model(cfg.model, processor.tokenizer, seed=3)
    return cfg, model, processor, rows, [prompt_example(processor, r) for r in rows[:4]]


def test_rl_loop_against_a_rollout_server_in_the_serving_venv():
    """The rollout server (vLLM in .venv-serve, on loopback) gives transformers' greedy rollouts,
    forced answers included; the GRPO loop runs against it, pushing its weights after each update,
    and the server's greedy rollouts, and a greedy evaluation through it, equal transformers' on the
    updated policy too."""
    from model_src.config import derive
    from model_src.rl.loop import train_grpo
    from model_src.rl.rollout import TransformersEngine, VLLMServerEngine
    from tests.conftest import digit_share

    cfg, model, processor, rows, prompts = _servable_policy()
    local = TransformersEngine(model, processor)
    greedy = dict(max_new_tokens=12, do_sample=False, force_answer_tokens=4)
    with VLLMServerEngine(model, processor, venv=ROOT / ".venv-serve") as server:
        before = server.generate(prompts, **greedy)
        expected = local.generate(prompts, **greedy)
        assert torch_equal(before.sequences, expected.sequences) and before.texts == expected.texts
        assert before.forced == expected.forced
        sampled = server.generate(prompts[:2], n=3, max_new_tokens=8, do_sample=True, seeds=[5, 6])
        assert sampled.texts == server.generate(prompts[:2], n=3, max_new_tokens=8, do_sample=True,
                                                seeds=[5, 6]).texts  # per-group seeds reproduce
        history = []
        rl = load_rl_config(cfg)
        train_grpo(model, processor, rows, rl, 0, lambda m, i: history.append(m), reward_fn=digit_share,
                   engine=server)
        assert server.last_sync_s > 0 and any(h["policy_loss"] != 0 for h in history)
        after = server.generate(prompts, **greedy)
        assert torch_equal(after.sequences, local.generate(prompts, **greedy).sequences)
        assert not torch_equal(after.sequences, before.sequences)  # the pushed weights were used
        # evaluation served the same way: the same greedy records as transformers'
        from model_src.eval.evaluate import evaluate_model

        few = derive(cfg.evaluate, "evaluate", max_samples_per_domain=6, checkpoint_samples_per_domain=0,
                     max_new_tokens=12, pass_k=0)
        served, served_records = evaluate_model(model, processor, rows, few, engine=server)
        local_metrics, local_records = evaluate_model(model, processor, rows, few)
        assert [r["response"] for r in served_records] == [r["response"] for r in local_records]
        assert served == local_metrics and len(served_records) == 6


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def load_rl_config(cfg):
    from model_src.config import derive

    return derive(cfg.rlcs, "rlcs", num_iterations=3, prompts_per_iteration=4, group_size=4, max_new_tokens=8,
                  lr=3e-3, checkpoint_every=0, force_answer_tokens=3)
