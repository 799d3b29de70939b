"""`make gpu-check`: is this GPU machine ready for thinkpipe's stages? One short script, run as it comes.

It runs on a bare GPU machine: torch and transformers as installed there (5.17 or later), the
data generators' numpy, pillow and pyarrow, and nothing else of the training stack: no MLflow,
KFP, DeepSpeed or vLLM is imported on its path (tests/test_gpu_check.py runs it with those
imports blocked). Through `model_src`'s own functions, with the device policy's placement and
bf16 autocast:

1. a small Glm4v trains packed pretraining steps and padded SFT steps (`train_supervised`): the
   loss falls and every parameter changes;
2. two GRPO iterations (`train_grpo`, rewarded by the share of digits in a response, a graded
   reward a random model can move) update the policy;
3. a greedy evaluation (`evaluate_model`) decodes and scores;
4. through 1-3 every module's tensors were on the policy's device (forward hooks count any that
   were not: "nothing ran on the CPU");
5. a roughly 1B-parameter Glm4v trains a few packed steps of 4,096-token rows: tokens/s, MFU over
   the steady-state steps against the GPU's bf16 peak (goal >= 0.40), the attention implementation,
   and the peak memory against the memory plan's estimate for the same layout.

    python -m model_src.gpu_check --out gpu_check.json    # on the GPU machine (make gpu-check)
    python -m model_src.gpu_check --device cpu --quick     # the same path on a CPU, small sizes

It exits 1 naming the check that failed. On a CPU the device checks hold trivially and there is
no peak to take MFU against; the quick run is there to keep the script working between GPU sessions.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

# the ~1B-parameter text decoder the MFU figure is measured on (vision tower kept small), and the
# small one the quick CPU run exercises the same path with
MFU_MODEL = ["model.text_hidden_size=2048", "model.text_num_layers=16", "model.text_num_heads=16",
             "model.text_num_kv_heads=4", "model.text_intermediate_size=8192", "model.mrope_section=[8,12,12]",
             "model.vocab_size=32768", "model.max_position_embeddings=4096", "model.vision_depth=4",
             "model.vision_hidden_size=512", "model.vision_num_heads=8", "model.vision_intermediate_size=1536"]
QUICK_MFU_MODEL = ["model.text_hidden_size=64", "model.text_num_layers=2", "model.max_position_embeddings=512"]
MFU_GOAL = 0.40
DOMAINS_WITH_IMAGES = ("digits", "chart", "ocr", "counting")


class CheckFailed(AssertionError):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


class DeviceWatch:
    """Forward hooks on every module of a model: counts module calls and those whose tensor inputs
    or outputs were off `device` (a model that computes on the GPU has none)."""

    def __init__(self, model, device):
        import torch

        self.device, self.calls, self.off = torch.device(device), 0, []
        self._handles = [m.register_forward_hook(self._hook) for m in model.modules()]

    def _hook(self, module, inputs, output) -> None:
        import torch

        self.calls += 1
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        for tensor in (*inputs, *outputs):
            if isinstance(tensor, torch.Tensor) and tensor.device != self.device and len(self.off) < 20:
                self.off.append(f"{type(module).__name__}: a tensor on {tensor.device}")

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def parameter_snapshot(model) -> dict:
    return {name: p.detach().float().cpu().clone() for name, p in model.named_parameters()}


def unchanged_parameters(model, before: dict) -> list[str]:
    return [name for name, p in model.named_parameters() if before[name].equal(p.detach().float().cpu())]


def digit_share(domain: str, response: str, reference: str) -> float:
    """A graded RL reward a random model can move (the GPU check's and the tests'): the share of
    digits in its response, so rollout groups spread (have an advantage) from the first iteration."""
    return sum(ch.isdigit() for ch in response) / max(1, len(response))


def corpus(rows_per_domain: int) -> tuple[list[dict], list[dict]]:
    """(training rows, eval rows) of the image domains, generated in memory."""
    from model_src.data.generate import GeneratorConfig, domain_rows

    gen = GeneratorConfig(rows={d: rows_per_domain for d in DOMAINS_WITH_IMAGES})
    train = [r for d in DOMAINS_WITH_IMAGES for r in domain_rows(gen, d, "train")]
    evaluation = [r for d in DOMAINS_WITH_IMAGES for r in domain_rows(gen, d, "eval", 4)]
    return train, evaluation


def stage_checks(policy, quick: bool, report: dict) -> None:
    """Steps 1-4 of the module docstring on the small profile's model."""
    import torch

    from model_src.config import load_config
    from model_src.eval.evaluate import evaluate_model
    from model_src.model.build import build_model, build_processor, train_tokenizer
    from model_src.model.inputs import pretrain_example, sft_example
    from model_src.rl.loop import train_grpo
    from model_src.train.supervised import train_supervised

    steps = 8 if quick else 30
    cfg = load_config("tiny" if quick else "small", [
        f"pretrain.num_steps={steps}", "pretrain.batch_size=4", "pretrain.pack_length=512", "pretrain.lr=3e-3",
        "pretrain.warmup_steps=2", "pretrain.checkpoint_every=0",
        f"sft.num_steps={steps}", "sft.batch_size=8", "sft.lr=3e-3", "sft.warmup_steps=2", "sft.checkpoint_every=0",
        "rlcs.num_iterations=2", "rlcs.prompts_per_iteration=4", "rlcs.group_size=4", "rlcs.max_new_tokens=16",
        "rlcs.lr=1e-3", "rlcs.checkpoint_every=0", "rlcs.force_answer_tokens=4",
        "evaluate.max_new_tokens=16", "evaluate.max_samples_per_domain=2", "evaluate.checkpoint_samples_per_domain=2",
        "evaluate.batch_size=8"])
    train_rows, eval_rows = corpus(12 if quick else 24)
    processor = build_processor(train_tokenizer([t for r in train_rows for t in (r["question"], r["reasoning"],
                                                                                  r["caption"])], 400), cfg.model)
    with torch.device(policy.device):
        model = build_model(cfg.model, processor.tokenizer, seed=0)
    policy.place(model)
    watch = DeviceWatch(model, policy.device)
    try:
        for name, examples, train_cfg in (
                ("pretrain", [pretrain_example(r) for r in train_rows], cfg.pretrain),
                ("sft", [sft_example(processor, r) for r in train_rows], cfg.sft)):
            before = parameter_snapshot(model)
            summary = train_supervised(model, processor, examples, train_cfg, seed=0, log=lambda m, s: None,
                                       desc=f"gpu-check {name}", autocast=policy.autocast)
            unchanged = unchanged_parameters(model, before)
            report[name] = {"first_loss": summary["first_loss"], "final_loss": summary["final_loss"],
                            "tokens_per_s": summary["steady_tokens_per_s"], "unchanged_parameters": len(unchanged)}
            check(summary["final_loss"] < summary["first_loss"],
                  f"{name}: the loss did not fall ({summary['first_loss']:.3f} -> {summary['final_loss']:.3f})")
            check(not unchanged, f"{name}: {len(unchanged)} parameters did not change, e.g. {unchanged[:3]}")
        before = parameter_snapshot(model)
        rl_rows = [r for r in train_rows if r["domain"] == "digits"]
        history: list[dict] = []
        train_grpo(model, processor, rl_rows, cfg.rlcs, seed=0, log=lambda m, i: history.append(m),
                   reward_fn=digit_share, autocast=policy.autocast)
        changed = len(before) - len(unchanged_parameters(model, before))
        report["rlcs"] = {"iterations": len(history), "reward_mean": [h["reward_mean"] for h in history],
                          "changed_parameters": changed}
        check(len(history) == 2, f"rlcs: {len(history)} iterations logged, expected 2")
        check(changed > 0, "rlcs: two GRPO iterations changed no parameter")
        model.eval()
        with policy.autocast():
            metrics, records = evaluate_model(model, processor, eval_rows, cfg.evaluate)
        report["evaluate"] = {"samples": len(records), "accuracy_mean": metrics["accuracy_mean"]}
        check(len(records) == 2 * len(DOMAINS_WITH_IMAGES) and all(r["response_tokens"] > 0 for r in records),
              f"evaluate: {len(records)} records, some without a response")
    finally:
        watch.close()
    report["device_watch"] = {"module_calls": watch.calls, "off_device": watch.off}
    check(watch.calls > 0 and not watch.off,
          f"tensors off {policy.device} in {len(watch.off)} module calls: {watch.off[:5]}")


def mfu_check(policy, quick: bool, steps: int, report: dict) -> None:
    """Step 5: packed 4K-token steps of the ~1B config; MFU and peak memory against the plan."""
    import torch

    from model_src.config import load_config
    from model_src.memory_plan import GIB, ModelShape, activation_bytes, model_states_bytes
    from model_src.model.build import build_model, build_processor, train_tokenizer
    from model_src.model.inputs import sft_example
    from model_src.train.flops import device_peak_tflops
    from model_src.train.supervised import train_supervised

    pack, rows = (512, 2) if quick else (4096, 8)
    cfg = load_config("tiny" if quick else "small", (QUICK_MFU_MODEL if quick else MFU_MODEL) + [
        f"sft.num_steps={steps}", f"sft.batch_size={rows}", f"sft.pack_length={pack}", "sft.lr=1e-4",
        "sft.warmup_steps=1", "sft.checkpoint_every=0"])
    train_rows, _ = corpus(40 if quick else 300)
    processor = build_processor(train_tokenizer([t for r in train_rows for t in (r["question"], r["reasoning"])],
                                                400), cfg.model)
    with torch.device(policy.device):
        model = build_model(cfg.model, processor.tokenizer, seed=0)
    policy.place(model)
    shape = ModelShape.of(cfg.model, len(processor.tokenizer))
    planned_states = model_states_bytes(shape.params, shape.largest_param, deepspeed=False, zero_stage=0, world=1)
    planned_activations = activation_bytes(shape, rows * pack, checkpointing=False)
    cuda = policy.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(policy.device)
    summary = train_supervised(model, processor, [sft_example(processor, r) for r in train_rows], cfg.sft, seed=0,
                               log=lambda m, s: None, desc="gpu-check mfu", autocast=policy.autocast)
    peak_tflops = device_peak_tflops(0.0, policy.device)
    result = {
        "parameters": shape.params, "rows_per_step": rows, "pack_length": pack, "steps": steps,
        "attention_implementation": model.config._attn_implementation,
        "steady_tokens_per_s": summary["steady_tokens_per_s"], "steady_model_tflops": summary["steady_model_tflops"],
        "device_peak_tflops": peak_tflops, "packing_efficiency": summary["packing_efficiency"],
        "plan_model_states_gib": planned_states / GIB, "plan_activations_gib": planned_activations / GIB,
    }
    if peak_tflops:
        result["steady_mfu"] = summary["steady_model_tflops"] / peak_tflops
    if cuda:
        peak = torch.cuda.max_memory_allocated(policy.device)
        result["peak_allocated_gib"] = peak / GIB
        result["peak_over_plan"] = peak / (planned_states + planned_activations)
    report["mfu"] = result
    check(summary["steady_model_tflops"] > 0, "mfu: no model FLOPs measured")


def environment(policy) -> dict:
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "device": str(policy.device),
           "compute_dtype": str(policy.compute_dtype)}
    if policy.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(policy.device)
        env["gpu_memory_gib"] = torch.cuda.get_device_properties(policy.device).total_memory / 1024 ** 3
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_src.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto",
                        help="auto: the device policy's choice (the GPU when there is one); cpu: force the CPU")
    parser.add_argument("--quick", action="store_true", help="small sizes: the same path in seconds on a CPU")
    parser.add_argument("--mfu-steps", type=int, default=8, help="packed steps of the MFU run (a quarter warm-up)")
    parser.add_argument("--skip-mfu", action="store_true", help="only steps 1-4")
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)

    from model_src.device import DevicePolicy

    policy = DevicePolicy.resolve("fp32" if args.device == "cpu" else "auto",
                                  cuda_available=False if args.device == "cpu" else None)
    report: dict = {"environment": environment(policy)}
    print(json.dumps(report["environment"]), flush=True)
    started = time.monotonic()
    failure = None
    try:
        stage_checks(policy, args.quick, report)
        if not args.skip_mfu and policy.device.type == "cpu" and not args.quick:
            # 1B parameters at 32K tokens a step would take hours on a CPU, and MFU needs a known peak
            print("gpu-check: no GPU here: the ~1B MFU run is skipped (--quick runs a small one)", flush=True)
        elif not args.skip_mfu:
            mfu_check(policy, args.quick, args.mfu_steps, report)
    except CheckFailed as exc:
        failure = str(exc)
    report["seconds"] = time.monotonic() - started
    report["passed"] = failure is None
    if failure:
        report["failure"] = failure
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(render(report), flush=True)
    return 0 if failure is None else 1


def render(report: dict) -> str:
    lines = [f"gpu-check on {report['environment'].get('gpu', report['environment']['device'])} "
             f"(torch {report['environment']['torch']}, transformers {report['environment']['transformers']})"]
    for name in ("pretrain", "sft"):
        if name in report:
            r = report[name]
            lines.append(f"  {name:<9} loss {r['first_loss']:.3f} -> {r['final_loss']:.3f}, "
                         f"{r['tokens_per_s']:,.0f} tokens/s, unchanged parameters {r['unchanged_parameters']}")
    if "rlcs" in report:
        lines.append(f"  rlcs      {report['rlcs']['iterations']} GRPO iterations, reward "
                     f"{[round(x, 3) for x in report['rlcs']['reward_mean']]}, "
                     f"{report['rlcs']['changed_parameters']} parameters changed")
    if "evaluate" in report:
        lines.append(f"  evaluate  {report['evaluate']['samples']} greedy samples, "
                     f"accuracy {report['evaluate']['accuracy_mean']:.3f}")
    if "device_watch" in report:
        lines.append(f"  device    {report['device_watch']['module_calls']:,} module calls, "
                     f"{len(report['device_watch']['off_device'])} with a tensor off {report['environment']['device']}")
    if "mfu" in report:
        m = report["mfu"]
        mfu = (f"MFU {m['steady_mfu']:.3f} of {m['device_peak_tflops']:.0f} TFLOP/s (goal >= {MFU_GOAL:.2f})"
               if "steady_mfu" in m else "no known peak: no MFU")
        lines.append(f"  mfu       {m['parameters'] / 1e9:.2f} B parameters, {m['rows_per_step']} x {m['pack_length']} "
                     f"tokens, attention {m['attention_implementation']}: {m['steady_tokens_per_s']:,.0f} tokens/s, "
                     f"{m['steady_model_tflops']:.2f} TFLOP/s, {mfu}")
        if "peak_allocated_gib" in m:
            lines.append(f"  memory    peak {m['peak_allocated_gib']:.1f} GiB allocated vs plan "
                         f"{m['plan_model_states_gib'] + m['plan_activations_gib']:.1f} GiB (states "
                         f"{m['plan_model_states_gib']:.1f} + activations {m['plan_activations_gib']:.1f}): "
                         f"{m['peak_over_plan']:.2f}x")
    lines.append(f"  {'PASSED' if report['passed'] else 'FAILED: ' + report['failure']} in {report['seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
