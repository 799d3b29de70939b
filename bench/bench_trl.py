"""RL step time: thinkpipe's GRPO loop vs TRL's `GRPOTrainer`, same model, batch, group size and
lengths, timed side by side in one process, `--runs` times (the arms alternate which goes first).
Each side's mean completion length is printed beside its time, so that equal work is shown.
Goal: ours / TRL <= 0.7 (issue 16: the 1-process loop stays fast).

Both start from the SFT model of the last `small` pipeline run (`make run`) and train on its RL
split with the same verifier (`model_src.rewards.score`): uniform sampling, one update per step,
no KL (TRL beta=0), clip 0.2 / 0.28, top-p 1.0, temperature 1.0.

    .venv/bin/python bench/bench_trl.py [--steps 8] [--prompts 8] [--group 4] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench_rlcs import latest_outputs


def time_ours(sft: Path, rows: list[dict], args) -> tuple[float, float]:
    from model_src.config import load_config
    from model_src.model.build import load_model_and_processor
    from model_src.rl.loop import train_grpo

    cfg = load_config("small", [f"rlcs.num_iterations={args.steps + 1}", f"rlcs.prompts_per_iteration={args.prompts}",
                                f"rlcs.group_size={args.group}", f"rlcs.max_new_tokens={args.max_new_tokens}",
                                "rlcs.updates_per_iteration=1", "rlcs.curriculum=false", "rlcs.force_answer_tokens=0"])
    model, processor = load_model_and_processor(str(sft))
    stamps: list[float] = []
    skipped: list[bool] = []
    lengths: list[float] = []

    def log(metrics: dict, step: int) -> None:
        stamps.append(time.perf_counter())
        skipped.append(metrics["effective_group_share"] == 0.0)  # no mixed group: no backward pass
        lengths.append(metrics["response_length"])

    train_grpo(model, processor, rows, cfg.rlcs, seed=0, log=log)
    if any(skipped[1:]):
        print(f"note: thinkpipe skipped the update in {sum(skipped[1:])} of {args.steps} timed steps "
              f"(every group all right or all wrong); TRL still runs its backward pass there")
    # the first iteration is warm-up
    return (stamps[-1] - stamps[0]) / args.steps, sum(lengths[1:]) / len(lengths[1:])


def time_trl(sft: Path, rows: list[dict], args, out_dir: Path) -> tuple[float, float]:
    import io

    from datasets import Dataset
    from PIL import Image
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from model_src.model.build import load_model_and_processor
    from model_src.model.generate import media_token_ids
    from model_src.rewards import score

    model, processor = load_model_and_processor(str(sft))
    # GLM pads with its EOS token; TRL takes pad tokens for padding when it rebuilds attention and
    # M-RoPE positions, which drops a finished completion's EOS. Give TRL a distinct pad token.
    processor.tokenizer.pad_token = "[MASK]"
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    # TRL suppresses only `<|image|>`; a sampled begin/end-of-image marker breaks its M-RoPE rebuild.
    # Ban every media marker, as thinkpipe's own rollouts do.
    model.generation_config.bad_words_ids = [[i] for i in media_token_ids(processor.tokenizer)]
    data = Dataset.from_list([{
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}],
        "image": Image.open(io.BytesIO(r["images"][0])).convert("RGB"),
        "answer": r["answer"], "domain": r["domain"]} for r in rows])

    def reward(completions, answer, domain, **kwargs):
        texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
        return [score(d, t, a).reward for t, a, d in zip(texts, answer, domain)]

    stamps: list[float] = []
    lengths: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **__):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    config = GRPOConfig(
        output_dir=str(out_dir), max_steps=args.steps + 1, per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group, max_completion_length=args.max_new_tokens, learning_rate=2e-4, beta=0.0,
        epsilon=0.2, epsilon_high=0.28, temperature=1.0, top_p=1.0, num_iterations=1, loss_type="grpo",
        use_cpu=True, bf16=False, report_to="none", logging_steps=1, save_strategy="no", seed=0,
        dataloader_num_workers=0, remove_unused_columns=False)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=data,
                          processing_class=processor, callbacks=[StepTimer()])
    trainer.train()
    return (stamps[-1] - stamps[0]) / args.steps, sum(lengths[1:]) / max(1, len(lengths[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="thinkpipe")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (after one warm-up step)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--task", default="digit_sum", help="RL rows of this generator task only")
    parser.add_argument("--runs", type=int, default=3, help="side-by-side runs; the mean ratio is reported")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    from model_src.data.schema import read_split
    from pipelines.cli import DEFAULT_STATE_DIR, resolve_tracking_uri

    root = Path(__file__).resolve().parent.parent
    mlflow.set_tracking_uri(resolve_tracking_uri(None, root / DEFAULT_STATE_DIR)[0])
    tmp = Path(tempfile.mkdtemp(prefix="bench-trl-"))
    sft = latest_outputs(args.experiment, "sft", "model", tmp / "sft")
    # One task only: TRL 1.16 left-pads prompts but not their mm_token_type_ids, so a batch mixing
    # image sizes (different prompt lengths) breaks its Glm4v M-RoPE positions. digit_sum prompts
    # share one image size and one question, hence one length, and are neither trivial nor hopeless.
    rows = [r for r in read_split(latest_outputs(args.experiment, "curate", "rl", tmp / "rl"))
            if r["task"] == args.task]
    ratios = []
    for run in range(args.runs):
        if run % 2:  # alternate the order: neither arm always runs on a warmer machine
            ours_s, ours_len = time_ours(sft, rows, args)
            trl_s, trl_len = time_trl(sft, rows, args, tmp / f"trl-{run}")
        else:
            trl_s, trl_len = time_trl(sft, rows, args, tmp / f"trl-{run}")
            ours_s, ours_len = time_ours(sft, rows, args)
        ratios.append(ours_s / trl_s)
        print(f"run {run + 1}: RL step ({args.prompts} prompts x {args.group} rollouts, <= {args.max_new_tokens} "
              f"new tokens, mean of {args.steps} steps after warm-up): thinkpipe {ours_s:.2f} s "
              f"(completions {ours_len:.1f} tokens), TRL GRPOTrainer {trl_s:.2f} s (completions {trl_len:.1f} tokens): "
              f"ratio {ratios[-1]:.2f}", flush=True)
    ratio = sum(ratios) / len(ratios)
    print(f"ratio thinkpipe / TRL = {ratio:.2f}, mean of {len(ratios)} runs "
          f"({', '.join(f'{r:.2f}' for r in ratios)}; goal <= 0.7: {'met' if ratio <= 0.7 else 'NOT met'})")


if __name__ == "__main__":
    main()
