"""The memory plan: what each stage needs per GPU, estimated from the config before any GPU is held.

Per stage and per GPU:
- model states of training: weights, gradients and optimizer states. With DeepSpeed (bf16 mixed
  precision, AdamW) by ZeRO stage over the data-parallel world N, in DeepSpeed's own accounting
  (`estimate_zero{2,3}_model_states_mem_needs`, no offload): ZeRO-0 20P, ZeRO-1 4P + 16P/N,
  ZeRO-2 2P + 18P/N, ZeRO-3 18P/N + 4 x the largest parameter; without DeepSpeed (plain AdamW in
  fp32, data-parallel: every process holds all of it) 16P;
- activations of one micro-batch (`batch_size / N` rows of `pack_length`, or of the model's
  `max_position_embeddings` when batches are padded): about 34 x hidden bytes per token and layer
  in bf16 with a fused attention (Korthikanti et al. 2022, without the attention-matrix term),
  2 x hidden with activation checkpointing plus one layer recomputed, and the logits (bf16 and
  their fp32 log-softmax: 6 x vocab bytes per token); the vision tower's activations are left out;
- RLCS, data-parallel over the same world as training: the update's micro-batch (`rlcs.micro_batch_size`
  rows, else a process's share of the kept rollouts) of prompt + new tokens, and the KV cache of a
  process's generate call (its share of the expanded draw, at most `prompts_per_iteration` groups;
  2 x layers x KV heads x head dim x 2 bytes per token). Rollouts decode with the policy's own
  weights (transformers `generate`), so no second copy is counted;
- evaluation: bf16 inference weights (2P) and the KV cache of its batch.

Stages that get GPUs (the training stages when `cluster.training_job` is on, any stage whose
`cluster.stages.<stage>.gpus` > 0) must fit `cluster.gpu_memory_gib`: `thinkpipe compile` and
`submit` refuse a profile where one does not (`require_fits`), naming the stage and the shortfall.

`thinkpipe plan --profile P` prints it; the model-states part is tested against DeepSpeed's
estimators. These are estimates: allocator fragmentation, CUDA context (about 1 GiB) and
communication buffers come on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model_src.config.base import ConfigError

GIB = 1024 ** 3
PROMPT_TOKENS = 1024  # assumed prompt length (image tokens included) for rollouts and evaluation


@dataclass(frozen=True)
class ModelShape:
    params: int
    largest_param: int  # elements of the largest single parameter (ZeRO-3 gathers one at a time)
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, model_cfg, tokenizer_vocab: int = 0) -> "ModelShape":
        """Glm4v built from `model_cfg` on the meta device (nothing allocated). Without
        `model.vocab_size` the embedding takes `tokenizer_vocab` rows (the tokenizer's size)."""
        import torch
        from transformers import Glm4vForConditionalGeneration

        from model_src.model.build import CONTROL_TOKENS, glm4v_config

        vocab = model_cfg.vocab_size or tokenizer_vocab
        if vocab <= len(CONTROL_TOKENS):
            raise ValueError("the plan needs a vocabulary size: model.vocab_size, or the tokenizer's")
        config = glm4v_config(model_cfg, _VocabOnly(vocab))
        with torch.device("meta"):
            model = Glm4vForConditionalGeneration(config)
        sizes = [p.numel() for p in model.parameters()]
        text = config.text_config
        return cls(sum(sizes), max(sizes), text.num_hidden_layers, text.hidden_size, text.num_key_value_heads,
                   text.hidden_size // text.num_attention_heads, vocab)


class _VocabOnly:
    """What `glm4v_config` reads from a tokenizer, for a vocabulary of `size` tokens."""

    pad_token_id = 0

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def convert_tokens_to_ids(self, token: str) -> int:
        from model_src.model.build import CONTROL_TOKENS

        return CONTROL_TOKENS.index(token)


def model_states_bytes(params: int, largest_param: int, *, deepspeed: bool, zero_stage: int, world: int) -> int:
    """Weights, gradients and optimizer states per GPU (see the module docstring).

    >>> model_states_bytes(10**9, 10**6, deepspeed=True, zero_stage=2, world=8) / 10**9
    4.25
    >>> model_states_bytes(10**9, 10**6, deepspeed=False, zero_stage=0, world=8) / 10**9
    16.0
    """
    if not deepspeed:
        return 16 * params
    if zero_stage == 0:
        return 20 * params
    if zero_stage == 1:
        return 4 * params + int(16 * params / world)
    if zero_stage == 2:
        return 2 * params + int(18 * params / world)
    return 4 * largest_param + int(18 * params / world)


def activation_bytes(shape: ModelShape, tokens: int, checkpointing: bool) -> int:
    per_layer = (2 if checkpointing else 34) * shape.hidden * tokens
    recompute = 34 * shape.hidden * tokens if checkpointing else 0
    return per_layer * shape.layers + recompute + 6 * shape.vocab * tokens


def kv_cache_bytes(shape: ModelShape, sequences: int, tokens_each: int) -> int:
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * 2 * sequences * tokens_each


@dataclass(frozen=True)
class StagePlan:
    stage: str
    world: int           # data-parallel processes the stage's numbers are divided over
    model_states: int    # bytes per GPU
    activations: int
    inference: int       # rollout / evaluation weights and KV cache
    notes: str
    on_gpu: bool = False  # whether the cluster layout gives this stage GPUs (then it must fit)

    @property
    def total(self) -> int:
        return self.model_states + self.activations + self.inference


def plan(cfg, tokenizer_vocab: int = 0, prompt_tokens: int = PROMPT_TOKENS) -> tuple[ModelShape, list[StagePlan]]:
    """The per-GPU plan of the training, RLCS and evaluation stages of `cfg` (a PipelineConfig)."""
    shape = ModelShape.of(cfg.model, tokenizer_vocab or cfg.tokenizer.vocab_size)
    cluster = cfg.cluster
    job = cluster.training_job
    world = job.nodes * max(job.processes_per_node or job.gpus_per_node, 1) if job.enabled else 1

    def on_gpu(stage: str) -> bool:
        training = stage in ("pretrain", "sft", "rlcs", "evaluate") and job.enabled and job.gpus_per_node > 0
        return training or getattr(cluster.stages, stage).gpus > 0

    plans = []
    for name in ("pretrain", "sft"):
        train = getattr(cfg, name)
        rows = train.micro_batch_size or max(1, train.batch_size // world)  # one forward's rows
        seq = train.pack_length or cfg.model.max_position_embeddings
        plans.append(StagePlan(
            name, world,
            model_states_bytes(shape.params, shape.largest_param, deepspeed=train.deepspeed,
                               zero_stage=train.zero_stage, world=world),
            activation_bytes(shape, rows * seq, train.activation_checkpointing), 0,
            f"{_states_note(train)}, {rows} x {seq} tokens"
            f"{', activation checkpointing' if train.activation_checkpointing else ''}", on_gpu(name)))
    rl = cfg.rlcs
    seq = prompt_tokens + rl.max_new_tokens
    rows = rl.micro_batch_size or math.ceil(rl.prompts_per_iteration / world) * rl.group_size
    generated = min(rl.prompts_per_iteration, math.ceil(rl.prompts_per_iteration * rl.max_expansion_ratio / world))
    plans.append(StagePlan(
        "rlcs", world, model_states_bytes(shape.params, shape.largest_param, deepspeed=rl.deepspeed,
                                          zero_stage=rl.zero_stage, world=world),
        activation_bytes(shape, rows * seq, rl.activation_checkpointing),
        kv_cache_bytes(shape, generated * rl.group_size, seq),
        f"{_states_note(rl)}, {rows} x ({prompt_tokens} + {rl.max_new_tokens}) tokens per forward"
        f"{', activation checkpointing' if rl.activation_checkpointing else ''}; "
        f"{generated * rl.group_size} rollouts per generate", on_gpu("rlcs")))
    ev = cfg.evaluate
    plans.append(StagePlan(
        "evaluate", world, 0, 0,
        2 * shape.params + kv_cache_bytes(shape, ev.batch_size, prompt_tokens + ev.max_new_tokens),
        f"batches of {ev.batch_size} x ({prompt_tokens} + {ev.max_new_tokens}) tokens", on_gpu("evaluate")))
    return shape, plans


def _states_note(section) -> str:
    return f"ZeRO-{section.zero_stage}" if section.deepspeed else "AdamW fp32"


def shortfalls(plans: list[StagePlan], gpu_gib: float) -> list[str]:
    """One line per GPU stage that does not fit `gpu_gib` GiB per GPU."""
    return [f"{p.stage} needs {p.total / GIB:.1f} GiB per GPU, {(p.total - gpu_gib * GIB) / GIB:.1f} GiB more than "
            f"the {gpu_gib:g} GiB of cluster.gpu_memory_gib ({p.notes})"
            for p in plans if p.on_gpu and p.total > gpu_gib * GIB]


class PlanDoesNotFit(ConfigError):
    """A cluster layout whose stages would not fit their GPUs: a config problem, found before any GPU is held."""


def require_fits(cfg, profile: str = "") -> None:
    """Refuse a cluster layout whose memory plan does not fit its GPUs (compile, submit, schedule)."""
    _, plans = plan(cfg)
    short = shortfalls(plans, cfg.cluster.gpu_memory_gib)
    if short:
        raise PlanDoesNotFit(f"the memory plan of profile {profile or cfg.profile!r} does not fit its cluster layout "
                             f"(`thinkpipe plan --profile {profile or cfg.profile}`):\n  " + "\n  ".join(short))


def render(shape: ModelShape, plans: list[StagePlan], gpu_gib: float) -> str:
    lines = [f"model: {shape.params / 1e9:.3f} B parameters, {shape.layers} layers, hidden {shape.hidden}, "
             f"vocab {shape.vocab}; GPU memory {gpu_gib:g} GiB",
             f"{'stage':<9} {'GPUs':>5} {'states':>9} {'activ.':>9} {'infer.':>9} {'total':>9}  fits  notes"]
    for p in plans:
        fits = "yes" if p.total <= gpu_gib * GIB else f"NO (short {(p.total - gpu_gib * GIB) / GIB:.1f} GiB)"
        fits += "" if p.on_gpu else " (no GPU in the cluster layout)"
        lines.append(f"{p.stage:<9} {p.world:>5} {p.model_states / GIB:>8.1f}G {p.activations / GIB:>8.1f}G "
                     f"{p.inference / GIB:>8.1f}G {p.total / GIB:>8.1f}G  {fits}  {p.notes}")
    return "\n".join(lines)
