"""The recipe's sections: tokenizer, model, curation, pretraining and SFT, RLCS, evaluation, export.

Each is a frozen dataclass with defaults and a `validate(prefix)` that names the bad key. Their
fields are the recipe's hyperparameters; docs/recipe.md says which numbers come from the paper and
which are open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model_src.config.base import require as _require


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 512  # BPE vocabulary learned from the corpus, before special tokens

    def validate(self, prefix: str) -> None:
        _require(self.vocab_size >= 300, f"{prefix}.vocab_size", "must be >= 300 (256 bytes + merges)")


@dataclass(frozen=True)
class ModelConfig:
    """Glm4v architecture. Names follow transformers' Glm4vTextConfig / Glm4vVisionConfig."""

    text_hidden_size: int = 128
    text_num_layers: int = 2
    text_num_heads: int = 4
    text_num_kv_heads: int = 2
    text_intermediate_size: int = 256
    partial_rotary_factor: float = 0.5
    # M-RoPE split of the rotary half-dims over (temporal, height, width); must sum to
    # head_dim * partial_rotary_factor / 2 (9B: head_dim 128 -> [8, 12, 12]).
    mrope_section: tuple[int, ...] = (2, 3, 3)
    max_position_embeddings: int = 1024
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_num_heads: int = 2
    vision_intermediate_size: int = 128
    vision_image_size: int = 112  # size the learned position table is built for; resampled to any input
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    # pixels of one image (one frame of a video): an image outside the bounds is resized, keeping its
    # aspect ratio, to sides that are multiples of patch*merge = 28 px (one LLM token per 28 x 28 px).
    # transformers counts a still image as temporal_patch_size frames; model/build.py converts.
    # The default fits every generated image (at most 224 x 84 or 168 x 112) whole.
    min_pixels: int = 56 * 56
    max_pixels: int = 224 * 112
    # embedding rows: 0 = the tokenizer's size; the real model has 151,552 (its released tokenizer)
    vocab_size: int = 0
    # start from released HF-format weights (model + processor): a local folder or s3://bucket/prefix;
    # empty = random init and a tokenizer learned from the corpus
    init_from: str = ""
    # compute precision (model_src/device.py): auto = bf16 autocast on a GPU, fp32 on the CPU;
    # fp32 = never bf16; bf16 = required (refused where there is no GPU)
    precision: str = "auto"

    @property
    def text_head_dim(self) -> int:
        return self.text_hidden_size // self.text_num_heads

    def validate(self, prefix: str) -> None:
        _require(self.text_hidden_size % self.text_num_heads == 0, f"{prefix}.text_num_heads",
                 "must divide text_hidden_size")
        _require(self.text_num_heads % self.text_num_kv_heads == 0, f"{prefix}.text_num_kv_heads",
                 "must divide text_num_heads")
        _require(self.vision_hidden_size % self.vision_num_heads == 0, f"{prefix}.vision_num_heads",
                 "must divide vision_hidden_size")
        rotary_half = int(self.text_head_dim * self.partial_rotary_factor) // 2
        _require(sum(self.mrope_section) == rotary_half, f"{prefix}.mrope_section",
                 f"must sum to head_dim * partial_rotary_factor / 2 = {rotary_half}, got {list(self.mrope_section)}")
        _require(len(self.mrope_section) == 3, f"{prefix}.mrope_section", "needs 3 entries (t, h, w)")
        _require(self.vocab_size >= 0, f"{prefix}.vocab_size", "must be >= 0 (0 = the tokenizer's size)")
        _require(not self.init_from.startswith(("http://", "https://", "hf://")), f"{prefix}.init_from",
                 "must be a local folder or an s3:// URI (no model hub is reachable from the cluster)")
        _require(self.min_pixels <= self.max_pixels, f"{prefix}.min_pixels", "must be <= max_pixels")
        _require(self.precision in ("auto", "fp32", "bf16"), f"{prefix}.precision",
                 f"must be auto, fp32 or bf16, got {self.precision!r}")


# the rule-based verifiers a user's domain may name (model_src/rewards/verifiers.py), or "judge"
DOMAIN_VERIFIERS = ("math", "chart", "ocr", "counting", "choice", "grounding", "gui", "video", "vqa", "judge")


@dataclass(frozen=True)
class DomainConfig:
    """A user's own domain (`curate.domains.<name>`): how its answers are scored and look."""

    verifier: str = "vqa"  # a rule-based verifier by name (vqa: exact after normalisation), or "judge"
    answer_type: str = "text"  # schema.ANSWER_PATTERNS: what a well-formed reference looks like
    task_weights: dict[str, float] = field(default_factory=dict)  # sampling mass of a task vs 1.0 for the rest

    def validate(self, prefix: str) -> None:
        from model_src.data.schema import ANSWER_PATTERNS

        _require(self.verifier in DOMAIN_VERIFIERS, f"{prefix}.verifier",
                 f"must be one of {', '.join(DOMAIN_VERIFIERS)}, got {self.verifier!r}")
        _require(self.answer_type in ANSWER_PATTERNS, f"{prefix}.answer_type",
                 f"must be one of {', '.join(ANSWER_PATTERNS)}, got {self.answer_type!r}")
        for task, weight in self.task_weights.items():
            _require(weight > 0, f"{prefix}.task_weights.{task}", "must be > 0")


@dataclass(frozen=True)
class CurateConfig:
    """Curation (model_src/data/curate.py). Eval rows come from the generator's eval split;
    training rows are split by id hash into RL prompts, SFT and pretraining."""

    rl_fraction: float = 0.25    # of the training rows: prompts for RLCS
    sft_fraction: float = 0.35   # of the training rows: long-CoT SFT; the remainder is pretraining
    near_dup_hamming: int = 8    # perceptual-hash bits (of 256) within which two images are near-duplicates
    template_min_rows: int = 3   # a question shared by this many eval rows is a template, not a leak
    recaption_ratio: float = 0.5  # share of pretraining captions rebuilt from the generator's facts
    max_image_pixels: int = 4096 * 4096  # decompression-bomb ceiling, checked on the header
    max_aspect_ratio: float = 200.0
    min_image_side: int = 8  # pixels: a thinner image is degenerate (a line, a tracking pixel)
    max_text_chars: int = 4096
    max_quarantine_share: float = 0.25  # gate: per domain, above this the stage fails
    min_domain_share: float = 0.02      # gate: every domain keeps at least this share of kept rows
    batch_rows: int = 512        # rows decoded at a time (streaming keeps memory flat)
    # scale-out (model_src/data/curation/): the per-shard scan fans out over at most `scan_tasks`
    # parallel tasks; the global join runs in DuckDB within `join_memory_mb`, spilling to disk
    scan_tasks: int = 8
    join_memory_mb: int = 128
    join_threads: int = 0        # DuckDB threads; 0: every core
    # a user's own domains beside the built-in eight (schema.DOMAINS): name -> verifier, answer type
    domains: dict[str, DomainConfig] = field(default_factory=dict)
    # the data mix: a domain's sampling mass in every split against 1.0 for each other domain
    # (`--set curate.domain_weights.digits=3`); unset, every domain weighs the same
    domain_weights: dict[str, float] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        for name in ("rl_fraction", "sft_fraction"):
            value = getattr(self, name)
            _require(0.0 < value < 1.0, f"{prefix}.{name}", f"must be in (0, 1), got {value}")
        _require(self.rl_fraction + self.sft_fraction < 1.0, f"{prefix}.sft_fraction",
                 "rl_fraction + sft_fraction must leave rows for pretraining")
        _require(0 <= self.near_dup_hamming < 64, f"{prefix}.near_dup_hamming", "must be in [0, 64)")
        _require(self.template_min_rows >= 2, f"{prefix}.template_min_rows", "must be >= 2")
        for name in ("recaption_ratio", "max_quarantine_share", "min_domain_share"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"{prefix}.{name}", f"must be in [0, 1], got {value}")
        for name in ("max_image_pixels", "max_text_chars", "batch_rows", "scan_tasks"):
            _require(getattr(self, name) > 0, f"{prefix}.{name}", "must be > 0")
        _require(self.join_memory_mb >= 64, f"{prefix}.join_memory_mb", "must be >= 64 (DuckDB needs room to spill)")
        _require(self.join_threads >= 0, f"{prefix}.join_threads", "must be >= 0 (0: every core)")
        _require(self.max_aspect_ratio >= 1.0, f"{prefix}.max_aspect_ratio", "must be >= 1")
        _require(self.min_image_side >= 1, f"{prefix}.min_image_side", "must be >= 1")
        from model_src.data.schema import DOMAINS

        for name, domain in self.domains.items():
            _require(name not in DOMAINS, f"{prefix}.domains.{name}",
                     f"is a built-in domain ({', '.join(DOMAINS)}): give yours another name")
            _require(bool(name.strip()) and name.replace("_", "").replace("-", "").isalnum(),
                     f"{prefix}.domains.{name}", "a domain name is letters, digits, '-' and '_'")
            domain.validate(f"{prefix}.domains.{name}")
        for name, weight in self.domain_weights.items():
            _require(name in DOMAINS or name in self.domains, f"{prefix}.domain_weights.{name}",
                     f"is no domain: the built-in ones are {', '.join(DOMAINS)}, yours {sorted(self.domains)}")
            _require(weight > 0, f"{prefix}.domain_weights.{name}", f"must be > 0, got {weight}")


@dataclass(frozen=True)
class TrainConfig:
    """Supervised training (pretraining and SFT share the loop)."""

    num_steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 100  # steps between resumable checkpoints; 0 = none
    # 0: batch_size samples per step, padded to the longest; > 0: batch_size rows of this many
    # tokens, each packed with whole samples (model_src/train/packing.py)
    pack_length: int = 0
    # train through a DeepSpeed engine (model_src/train/distributed.py); ZeRO stage 0-3
    deepspeed: bool = False
    zero_stage: int = 0
    peak_tflops: float = 0.0  # device peak for MFU; 0 = known GPUs' bf16 peak, unknown on CPU (not logged)
    # rows per forward pass per process; the step's rows are accumulated over micro-batches of this
    # size (0 = one forward with all of them): activations scale with it, the result does not
    micro_batch_size: int = 0
    # recompute activations in the backward pass instead of keeping them (less memory, about a
    # third more compute); the memory a 9B model's long sequences need on a GPU
    activation_checkpointing: bool = False

    def validate(self, prefix: str) -> None:
        _require(self.num_steps >= 0, f"{prefix}.num_steps", "must be >= 0 (0 only for pretrain with model.init_from)")
        _require(self.batch_size > 0, f"{prefix}.batch_size", "must be > 0")
        _require(self.lr > 0, f"{prefix}.lr", "must be > 0")
        _require(self.warmup_steps >= 0 and (self.num_steps == 0 or self.warmup_steps <= self.num_steps),
                 f"{prefix}.warmup_steps", "must be in [0, num_steps]")
        _require(self.log_every > 0, f"{prefix}.log_every", "must be > 0")
        _require(self.checkpoint_every >= 0, f"{prefix}.checkpoint_every", "must be >= 0 (0 = no checkpoints)")
        _require(self.pack_length >= 0, f"{prefix}.pack_length", "must be >= 0 (0 = padded batches)")
        _require(self.zero_stage in (0, 1, 2, 3), f"{prefix}.zero_stage", "must be 0, 1, 2 or 3")
        _require(self.micro_batch_size >= 0 and (not self.micro_batch_size or self.batch_size % self.micro_batch_size == 0),
                 f"{prefix}.micro_batch_size", "must be 0 (no accumulation) or divide batch_size")


# who decodes rollouts and evaluation (model_src/rl/rollout.py: make_engine)
ROLLOUT_ENGINES = ("auto", "transformers", "vllm", "vllm-server")


@dataclass(frozen=True)
class RLConfig:
    """GRPO with clip-higher, no KL and no entropy term (docs/recipe.md section 4)."""

    num_iterations: int = 10
    prompts_per_iteration: int = 8
    group_size: int = 4  # rollouts per prompt
    max_new_tokens: int = 48
    lr: float = 2e-4
    clip_low: float = 0.2
    clip_high: float = 0.28  # clip-higher: a larger upper bound on the importance ratio
    temperature: float = 1.0
    top_p: float = 1.0
    updates_per_iteration: int = 2
    # curriculum sampling and dynamic expansion (model_src/rl/curriculum.py); False = uniform ablation
    curriculum: bool = True
    curriculum_floor: float = 0.1       # sampling weight of a prompt that is always right or always wrong
    curriculum_alpha: float = 0.5       # weight of the newest observed pass rate
    tier_thresholds: tuple[float, ...] = (0.8, 0.6, 0.4, 0.2)  # pass-rate bounds of tiers 0 (easy) .. 4
    expansion_ema_decay: float = 0.8
    max_expansion_ratio: float = 4.0
    offline_k: int = 0                  # pass@k rollouts per prompt to grade difficulty before RL; 0 = prior
    max_rollouts: int = 0               # rollout budget: stop once this many were drawn; 0 = no budget
    force_answer_tokens: int = 16       # answer budget after `</think><answer>` is forced at max_new_tokens; 0 = off
    checkpoint_every: int = 5           # iterations between resumable checkpoints (with curriculum state); 0 = none
    # who generates rollouts (model_src/rl/rollout.py): "auto" = vLLM when it imports and CUDA is
    # available, else transformers `generate`; "transformers"; "vllm" (the RLCS stage fails at its
    # start if vLLM is missing); "vllm-server" (vLLM in its own venv or pod, over HTTP)
    rollout_engine: str = "auto"
    # rollout_engine=vllm-server: the rollout server's URL; "" = start one from .venv-serve on 127.0.0.1
    rollout_server_url: str = ""
    # the update's layout (the GRPO loop is data-parallel over the job's processes, model_src/rl/loop.py):
    # rows per policy forward in an update (0 = all of a process's kept rollouts in one forward),
    # recomputed activations, and DeepSpeed's ZeRO-2 for the policy (bf16 weights replicated for the
    # rollouts, gradients and fp32 optimizer states sharded over the processes)
    micro_batch_size: int = 0
    activation_checkpointing: bool = False
    deepspeed: bool = False
    zero_stage: int = 0

    def validate(self, prefix: str) -> None:
        _require(self.num_iterations > 0, f"{prefix}.num_iterations", "must be > 0")
        _require(self.micro_batch_size >= 0, f"{prefix}.micro_batch_size", "must be >= 0 (0 = one forward)")
        # ZeRO-3 partitions the weights: every forward, each decoding step of a rollout included,
        # would become a collective all ranks must join in step; the rollouts need whole weights
        _require(self.zero_stage in (0, 1, 2), f"{prefix}.zero_stage",
                 "must be 0, 1 or 2 for RLCS (rollouts decode locally with whole weights; ZeRO-3 shards them)")
        _require(self.deepspeed or self.zero_stage == 0, f"{prefix}.zero_stage", "needs rlcs.deepspeed=true")
        _require(self.prompts_per_iteration > 0, f"{prefix}.prompts_per_iteration", "must be > 0")
        _require(self.group_size >= 2, f"{prefix}.group_size", "must be >= 2 (advantages are group-relative)")
        _require(self.max_new_tokens > 0, f"{prefix}.max_new_tokens", "must be > 0")
        _require(0 < self.clip_low < 1, f"{prefix}.clip_low", "must be in (0, 1)")
        _require(self.clip_high >= self.clip_low, f"{prefix}.clip_high", "must be >= clip_low")
        _require(0 < self.top_p <= 1, f"{prefix}.top_p", "must be in (0, 1]")
        _require(self.temperature > 0, f"{prefix}.temperature", "must be > 0")
        _require(self.updates_per_iteration > 0, f"{prefix}.updates_per_iteration", "must be > 0")
        _require(0 < self.curriculum_floor <= 1, f"{prefix}.curriculum_floor", "must be in (0, 1]")
        _require(0 < self.curriculum_alpha <= 1, f"{prefix}.curriculum_alpha", "must be in (0, 1]")
        _require(list(self.tier_thresholds) == sorted(self.tier_thresholds, reverse=True)
                 and all(0 < t < 1 for t in self.tier_thresholds), f"{prefix}.tier_thresholds",
                 "must be decreasing values in (0, 1)")
        _require(0 <= self.expansion_ema_decay < 1, f"{prefix}.expansion_ema_decay", "must be in [0, 1)")
        _require(self.max_expansion_ratio >= 1, f"{prefix}.max_expansion_ratio", "must be >= 1")
        _require(self.offline_k == 0 or self.offline_k >= 2, f"{prefix}.offline_k",
                 "must be 0 (no offline grading) or >= 2 (a pass rate needs a group of rollouts)")
        _require(self.max_rollouts >= 0, f"{prefix}.max_rollouts", "must be >= 0 (0 = no budget)")
        _require(self.checkpoint_every >= 0, f"{prefix}.checkpoint_every", "must be >= 0 (0 = no checkpoints)")
        _require(self.force_answer_tokens >= 0, f"{prefix}.force_answer_tokens", "must be >= 0")
        _require(self.rollout_engine in ROLLOUT_ENGINES, f"{prefix}.rollout_engine",
                 f"must be one of {', '.join(ROLLOUT_ENGINES)}, got {self.rollout_engine!r}")


@dataclass(frozen=True)
class EvalConfig:
    max_new_tokens: int = 64
    max_samples_per_domain: int = 64
    batch_size: int = 16
    force_answer_tokens: int = 16  # as in RL: answer budget once thinking hits max_new_tokens; 0 = off
    pass_k: int = 0  # sampled pass@k (temperature 1, top-p 1) besides greedy pass@1; 0 = greedy only
    # who decodes (model_src/rl/rollout.py, as rlcs.rollout_engine): auto, transformers, vllm, vllm-server
    rollout_engine: str = "auto"
    rollout_server_url: str = ""  # vllm-server: "" = start one from .venv-serve on 127.0.0.1
    worst_examples: int = 3  # per domain, in the reviewer's worst-examples page
    # the pretrained and SFT checkpoints are also scored, on the first this-many samples per domain
    # (the same samples for every stage), so MLflow shows each stage's gain; 0 = final model only
    checkpoint_samples_per_domain: int = 8
    # the same prompts answered with blank images too: blind_accuracy and visual_gain per domain
    blind_baseline: bool = True

    def validate(self, prefix: str) -> None:
        _require(self.max_new_tokens > 0, f"{prefix}.max_new_tokens", "must be > 0")
        _require(self.pass_k >= 0, f"{prefix}.pass_k", "must be >= 0 (0 = greedy only)")
        _require(self.worst_examples >= 0, f"{prefix}.worst_examples", "must be >= 0")
        _require(0 <= self.checkpoint_samples_per_domain <= self.max_samples_per_domain,
                 f"{prefix}.checkpoint_samples_per_domain", "must be in [0, max_samples_per_domain]")
        _require(self.max_samples_per_domain > 0, f"{prefix}.max_samples_per_domain", "must be > 0")
        _require(self.batch_size > 0, f"{prefix}.batch_size", "must be > 0")
        _require(self.force_answer_tokens >= 0, f"{prefix}.force_answer_tokens", "must be >= 0")
        _require(self.rollout_engine in ROLLOUT_ENGINES, f"{prefix}.rollout_engine",
                 f"must be one of {', '.join(ROLLOUT_ENGINES)}, got {self.rollout_engine!r}")


@dataclass(frozen=True)
class JudgeConfig:
    """An OpenAI-compatible chat endpoint that judges answers no rule can check (model_src/rewards/judge.py)."""

    url: str = ""  # base URL ending in /v1 (a `thinkpipe serve` model, or an outside judge); "" = no judge
    model: str = ""  # the model name the endpoint serves
    # the variable holding the API key ("" = none); on a cluster, `cluster.secret_env` fills it from a Secret
    api_key_env: str = "THINKPIPE_JUDGE_API_KEY"
    timeout_s: float = 30.0  # per request; a judge that does not answer in time gives `unreachable_reward`
    concurrency: int = 8  # requests in flight at once
    max_tokens: int = 16  # the verdict is one word; thinking judges need more
    unreachable_reward: float = 0.0  # the reward when the judge cannot be reached or answers nonsense

    def validate(self, prefix: str) -> None:
        _require(not self.url or self.url.startswith(("http://", "https://")), f"{prefix}.url",
                 f"must be an http(s) URL ending in /v1, got {self.url!r}")
        _require(not self.url or bool(self.model), f"{prefix}.model", "must name the model the judge endpoint serves")
        _require(self.timeout_s > 0, f"{prefix}.timeout_s", "must be > 0")
        _require(self.concurrency > 0, f"{prefix}.concurrency", "must be > 0")
        _require(self.max_tokens > 0, f"{prefix}.max_tokens", "must be > 0")
        _require(0 <= self.unreachable_reward <= 1, f"{prefix}.unreachable_reward", "must be in [0, 1]")


@dataclass(frozen=True)
class RewardConfig:
    """How RLCS and evaluation score answers (model_src/rewards): rule-based verifiers in worker
    processes with a hard per-call limit, and optionally a judge model for some domains."""

    workers: int = 2  # scoring processes per training process; 0 = in-process, no time limit
    timeout_s: float = 2.0  # per rule-based call: longer scores 0 with reason `timeout`
    # domains scored by the judge alone, and domains where the judge decides what the rule does not accept
    judge_domains: tuple[str, ...] = ()
    judge_fallback_domains: tuple[str, ...] = ()
    judge: JudgeConfig = field(default_factory=JudgeConfig)

    def validate(self, prefix: str) -> None:
        _require(self.workers >= 0, f"{prefix}.workers", "must be >= 0 (0 = score in-process)")
        _require(self.timeout_s > 0, f"{prefix}.timeout_s", "must be > 0")
        both = set(self.judge_domains) & set(self.judge_fallback_domains)
        _require(not both, f"{prefix}.judge_fallback_domains", f"{sorted(both)} also in judge_domains: pick one")
        _require(not (self.judge_domains or self.judge_fallback_domains) or bool(self.judge.url), f"{prefix}.judge.url",
                 "judge_domains / judge_fallback_domains need a judge endpoint")
        self.judge.validate(f"{prefix}.judge")

    def mode(self, domain: str) -> str:
        """`rule`, `judge` or `rule+judge` for a reward domain."""
        if domain in self.judge_domains:
            return "judge"
        return "rule+judge" if domain in self.judge_fallback_domains else "rule"


@dataclass(frozen=True)
class ExportConfig:
    registered_model_name: str = "thinkpipe-glm4v"
    # the promotion gate (model_src/eval/promotion.py), on paired per-prompt scores against the champion:
    promotion_tolerance: float = 0.02  # a domain dropping more than this (and 2 of its paired SEs) blocks
    promotion_margin: float = 0.02  # new data: promote when the gain's 95% lower bound is above -margin
    promotion_min_se: float = 2.0  # same data (a config or code change): the gain must exceed this many SEs
    s3_uri: str = ""  # also upload the exported folder to s3://bucket/prefix/<model>/<run id>; "" = no

    def validate(self, prefix: str) -> None:
        _require(bool(self.registered_model_name.strip()), f"{prefix}.registered_model_name", "must not be empty")
        _require(0 <= self.promotion_tolerance <= 1, f"{prefix}.promotion_tolerance", "must be in [0, 1]")
        _require(0 <= self.promotion_margin <= 1, f"{prefix}.promotion_margin", "must be in [0, 1]")
        _require(self.promotion_min_se >= 0, f"{prefix}.promotion_min_se", "must be >= 0")
        _require(not self.s3_uri or self.s3_uri.startswith("s3://"), f"{prefix}.s3_uri", "must be an s3:// URI or empty")
