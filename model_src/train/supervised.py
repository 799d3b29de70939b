"""Supervised training shared by pretraining (captioning) and SFT (long-CoT chat).

`train_supervised` runs AdamW with linear warm-up and cosine decay over batches drawn by a seeded
sampler, logs loss and learning rate every step, and returns a summary. The model is trained in
place. The stage functions in `model_src.stages` build the examples and save the result.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager

from model_src.config import TrainConfig
from model_src.device import model_device, to_device
from model_src.model.build import enable_activation_checkpointing
from model_src.model.inputs import Example, collate
from model_src.train.flops import TokenFlops, causal_pairs, device_peak_tflops, steady_window
from model_src.train.packing import EncodedCache, collate_packed, plan_steps


def seed_everything(seed: int) -> None:
    """Seed every random source a stage touches: Python, NumPy, torch (CPU and CUDA)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Multiplier of the peak lr at step s: linear warm-up, then cosine decay to 10%."""

    def fn(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.num_steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


def index_stream(num_examples: int, seed: int, weights: list[float] | None = None) -> Iterator[int]:
    """Endless example indices, deterministic from the seed: shuffled epochs, or with `weights`
    (curation's domain/concept balance) draws with replacement in proportion to them."""
    rng = random.Random(seed)
    if weights is not None:
        if len(weights) != num_examples:
            raise ValueError(f"{len(weights)} weights for {num_examples} examples")
        while True:
            yield from rng.choices(range(num_examples), weights=weights, k=1024)
    while True:
        epoch = list(range(num_examples))
        rng.shuffle(epoch)
        yield from epoch


def batch_order(num_examples: int, batch_size: int, num_steps: int, seed: int,
                weights: list[float] | None = None) -> list[list[int]]:
    """Indices of every step's batch, taken in order from `index_stream`."""
    stream = index_stream(num_examples, seed, weights)
    return [[next(stream) for _ in range(batch_size)] for _ in range(num_steps)]


def train_supervised(model, processor, examples: list[Example], cfg: TrainConfig, *args, **kwargs) -> dict[str, float]:
    """Train in place; `weights` (one per example) make batches a balanced resample. With `checkpoint_dir`, a checkpoint is written every `cfg.checkpoint_every`
    steps and an existing one is resumed from: model, optimizer, scheduler, RNG states and the data
    position (the batch order is a function of the seed, so the step number is the position).
    `on_checkpoint(step, loss)` runs on rank 0 after each checkpoint is written (the stage logs
    the weights as an MLflow LoggedModel). Batches go to the model's device (the stage placed it by
    the device policy) and forward passes run under `autocast()`. Packed rows (`cfg.pack_length`)
    attend per sample (model_src/train/packed_attention.py) while training.

    Arguments after `cfg`: seed, log, desc, checkpoint_dir, checkpoint_meta, weights, on_checkpoint,
    autocast (see `_train_supervised`)."""
    from model_src.train.packed_attention import packed_attention

    with packed_attention(model) if cfg.pack_length else nullcontext():
        return _train_supervised(model, processor, examples, cfg, *args, **kwargs)


def _train_supervised(
    model,
    processor,
    examples: list[Example],
    cfg: TrainConfig,
    seed: int,
    log: Callable[[dict[str, float], int], None],
    desc: str = "train",
    checkpoint_dir: Path | None = None,
    checkpoint_meta: dict | None = None,
    weights: list[float] | None = None,
    on_checkpoint: Callable[[int, float], None] | None = None,
    autocast: Callable[[], ContextManager] = nullcontext,
) -> dict[str, float]:
    import torch
    from tqdm import tqdm

    from model_src.train.checkpoint import (DS_FOLDER, resume_deepspeed, resume_latest, rng_state, save_checkpoint,
                                            save_deepspeed_checkpoint, set_rng_state)
    from model_src.train.distributed import all_reduce_sum, gathered, rank_and_world

    if not examples:
        raise ValueError(f"{desc}: no training examples")
    seed_everything(seed)
    model.train()
    if cfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    if cfg.pack_length:  # batch_size rows of pack_length tokens, each holding several whole samples
        encoded = EncodedCache(model, processor, examples)
        lengths = [encoded[i].length for i in range(len(examples))]
        plan = plan_steps(lengths, index_stream(len(examples), seed, weights), cfg.num_steps, cfg.batch_size,
                          cfg.pack_length, [ex.row_id for ex in examples])
    else:  # batch_size samples, padded to the longest
        plan = batch_order(len(examples), cfg.batch_size, cfg.num_steps, seed, weights)
    losses: list[float] = []
    tokens = real_tokens = slot_tokens = 0  # trained-on tokens, non-pad tokens, all slots
    first_step = 0
    engine, rank, world = None, 0, 1
    if cfg.deepspeed:
        from model_src.train.distributed import init_engine

        world = rank_and_world()[1]
        if cfg.batch_size % world:
            raise ValueError(f"{desc}: batch_size {cfg.batch_size} does not split over {world} processes")
        per_process = cfg.batch_size // world
        micro = cfg.micro_batch_size or per_process
        if per_process % micro:
            raise ValueError(f"{desc}: micro_batch_size {micro} does not divide the {per_process} rows per process")
        engine = init_engine(model, optimizer, scheduler, micro_batch=micro, accumulation_steps=per_process // micro,
                             zero_stage=cfg.zero_stage, max_grad_norm=cfg.max_grad_norm)
        rank, world = rank_and_world()
    ds_dir = checkpoint_dir / DS_FOLDER if checkpoint_dir and engine else None
    meta = resume_deepspeed(engine, ds_dir) if ds_dir is not None else None  # every rank loads its shard
    if meta is not None:
        set_rng_state(meta.pop("rng"))
        first_step, losses, tokens = meta["step"], meta["losses"], meta["tokens"]
        real_tokens, slot_tokens = meta.get("real_tokens", 0), meta.get("slot_tokens", 0)
        print(f"{desc}: resuming from {ds_dir} (step {first_step} of {cfg.num_steps})", flush=True)
    found = resume_latest(checkpoint_dir, model, optimizer, scheduler) if checkpoint_dir and not engine else None
    if found is not None:
        resumed, meta = found
        first_step, losses, tokens = meta["step"], meta["losses"], meta["tokens"]
        real_tokens, slot_tokens = meta.get("real_tokens", 0), meta.get("slot_tokens", 0)
        print(f"{desc}: resuming from {resumed} (step {first_step} of {cfg.num_steps})", flush=True)
    started, tokens_before, real_before = time.monotonic(), tokens, real_tokens
    timings: list[tuple[float, float, int]] = []  # per step run here: seconds, model FLOPs, real tokens
    peak = device_peak_tflops(cfg.peak_tflops, next(model.parameters()).device)
    token_flops = TokenFlops.of(model)
    progress = tqdm(range(first_step, cfg.num_steps), desc=desc, unit="step", mininterval=2.0,
                    initial=first_step, total=cfg.num_steps, disable=rank != 0)
    for step in progress:
        mine = plan[step][rank::world]  # this process's share of the step (all of it alone)
        # gradient accumulation: the share in micro-batches of `micro_batch_size` rows, one forward each
        micro = cfg.micro_batch_size or len(mine)
        batches, real, slots, pairs = [], 0, 0, 0  # pairs: causal (query, key) pairs within samples
        for part in (mine[i:i + micro] for i in range(0, len(mine), micro)):
            if cfg.pack_length:
                part_batch = collate_packed([[encoded[i] for i in row] for row in part], cfg.pack_length,
                                            processor.tokenizer.pad_token_id)
                real, slots = real + part_batch.pop("num_real_tokens"), slots + len(part) * cfg.pack_length
                pairs += causal_pairs(encoded[i].length for row in part for i in row)
            else:
                part_batch = collate(processor, [examples[i] for i in part], with_targets=True)
                real += int(part_batch["attention_mask"].sum())
                slots += part_batch["attention_mask"].numel()
                pairs += causal_pairs(part_batch["attention_mask"].sum(dim=1).tolist())
            batches.append(part_batch)
        # the ViT attends within each temporal slice of an image or video: each slice is an "image" here
        grids = [b["image_grid_thw"] for b in batches if b.get("image_grid_thw") is not None]
        patches, images = sum(int(g.prod(dim=1).sum()) for g in grids), sum(int(g[:, 0].sum()) for g in grids)
        targets = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]  # the tokens each loss averages
        device = engine.device if engine is not None else model_device(model)
        step_started = time.monotonic()
        if engine is None:
            # each micro-batch's token-mean loss weighted by its share of the step's target tokens:
            # the accumulated gradient is the gradient of the whole step's token-mean loss
            total, loss_value = sum(targets), 0.0
            optimizer.zero_grad(set_to_none=True)
            for part_batch, local in zip(batches, targets):
                with autocast():
                    loss = model(**to_device(part_batch, device)).loss
                (loss * (local / total)).backward()
                loss_value += loss.item() * (local / total)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
            optimizer.step()
            scheduler.step()
        else:
            # scale by this rank's share of the step's target tokens (DeepSpeed averages over ranks
            # and divides by the accumulation steps): the gradient of the global token-mean loss
            total, loss_sum = all_reduce_sum(sum(targets)), 0.0
            for part_batch, local in zip(batches, targets):
                loss = engine(**to_device(part_batch, device)).loss  # DeepSpeed's bf16 config decides precision
                engine.backward(loss * (local * world * len(batches) / total))
                engine.step()  # at the step's last micro-batch: clips, steps optimizer and scheduler, zeroes
                loss_sum += loss.item() * local
            grad_norm = float(engine.get_global_grad_norm() or 0.0)
            loss_value = all_reduce_sum(loss_sum) / total
            real, slots = all_reduce_sum(real), all_reduce_sum(slots)
            patches, images = int(all_reduce_sum(patches)), int(all_reduce_sum(images))
            pairs = int(all_reduce_sum(pairs))
        losses.append(loss_value)
        tokens += int(all_reduce_sum(sum(int((b["labels"] != -100).sum()) for b in batches)))
        real_tokens += real
        slot_tokens += slots
        if device.type == "cuda":  # kernels run asynchronously: the step ends when they have
            torch.cuda.synchronize(device)
        step_seconds = time.monotonic() - step_started
        # `real`, `pairs`, `patches` and `images` are already summed over ranks
        step_flops = token_flops.step(real, pairs, patches=patches, images=images)
        timings.append((step_seconds, step_flops, real))
        if rank == 0:
            tokens_per_s = real / step_seconds if step_seconds else 0.0
            tflops = step_flops / step_seconds / 1e12 if step_seconds else 0.0
            log({"loss": losses[-1], "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                 "packing_efficiency": real / slots, "tokens_per_s": tokens_per_s, "model_tflops": tflops,
                 **({"mfu": tflops / (peak * world)} if peak else {})}, step)
        if step % cfg.log_every == 0:
            progress.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        done = step + 1
        if checkpoint_dir and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.num_steps:
            meta = {**(checkpoint_meta or {}), "losses": losses, "tokens": tokens, "real_tokens": real_tokens,
                    "slot_tokens": slot_tokens}
            if engine is None:
                save_checkpoint(checkpoint_dir, done, model, optimizer, scheduler, meta)
            else:  # DeepSpeed's save must run on every rank (each writes its shard)
                save_deepspeed_checkpoint(engine, ds_dir, done, {**meta, "step": done, "rng": rng_state()})
            if on_checkpoint is not None:
                with gathered(model, engine is not None and cfg.zero_stage == 3):  # every rank takes part
                    if rank == 0:
                        on_checkpoint(done, losses[-1])
    elapsed = time.monotonic() - started
    if engine is not None and cfg.zero_stage == 3:
        from model_src.train.distributed import release_zero3

        release_zero3(model)  # whole weights back in `model`, on every rank, for saving and later use
    window = max(1, min(10, len(losses) // 4))
    steady = timings[steady_window(len(timings))]
    steady_seconds = sum(t for t, _, _ in steady)
    steady_tflops = sum(f for _, f, _ in steady) / steady_seconds / 1e12 if steady_seconds else 0.0
    return {
        "first_loss": sum(losses[:window]) / window,
        "final_loss": sum(losses[-window:]) / window,
        "target_tokens_per_s": (tokens - tokens_before) / elapsed if elapsed > 0 else 0.0,
        "tokens_per_s": (real_tokens - real_before) / elapsed if elapsed > 0 else 0.0,
        "packing_efficiency": real_tokens / slot_tokens if slot_tokens else 0.0,
        "train_seconds": elapsed,
        # after warm-up (flops.steady_window): the figures a throughput or MFU claim should quote
        "steady_tokens_per_s": sum(n for _, _, n in steady) / steady_seconds if steady_seconds else 0.0,
        "steady_model_tflops": steady_tflops,
        **({"steady_mfu": steady_tflops / (peak * world)} if peak else {}),
    }
