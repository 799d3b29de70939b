"""The GPU check (`make gpu-check`) stays runnable between GPU sessions: its quick mode runs here on
the CPU with the training stack's heavy imports blocked, as on a bare GPU machine, and passes its
own checks; and its device watch does catch a tensor off the device."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from model_src.gpu_check import DeviceWatch

# not installed on the GPU machine: importing any of them on the check's path is a failure there
ABSENT_ON_GPU_HOSTS = ("mlflow", "kfp", "deepspeed", "vllm", "dvc", "great_expectations", "boto3", "trl",
                       "imagehash")

BLOCKED_RUN = f"""
import runpy, sys
for name in {ABSENT_ON_GPU_HOSTS!r}:
    sys.modules[name] = None  # what an absent package looks like to `import` and to find_spec probes
runpy.run_module("model_src.gpu_check", run_name="__main__")
"""


def test_quick_check_passes_on_the_cpu_without_the_training_stacks_heavy_imports(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "-c", BLOCKED_RUN, "--device", "cpu", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["passed"] and report["environment"]["device"] == "cpu"
    for stage in ("pretrain", "sft"):
        assert report[stage]["final_loss"] < report[stage]["first_loss"]
        assert report[stage]["unchanged_parameters"] == 0
    assert report["rlcs"]["iterations"] == 2 and report["rlcs"]["changed_parameters"] > 0
    assert report["evaluate"]["samples"] == 8
    assert report["device_watch"]["module_calls"] > 1000 and report["device_watch"]["off_device"] == []
    mfu = report["mfu"]
    assert mfu["steady_model_tflops"] > 0 and mfu["attention_implementation"] == "sdpa"
    assert "steady_mfu" not in mfu  # a CPU has no known peak
    assert "PASSED" in proc.stdout


def test_device_watch_names_the_modules_that_saw_a_tensor_off_the_device():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    watch = DeviceWatch(model, "meta")  # the model runs on the CPU: every call is off "meta"
    model(torch.ones(2, 3))
    watch.close()
    assert watch.calls == 3 and len(watch.off) == 3 * 2  # each call's input and output
    assert {line.split(":")[0] for line in watch.off} == {"Sequential", "Linear", "ReLU"}
    model(torch.ones(2, 3))
    assert watch.calls == 3  # hooks removed
