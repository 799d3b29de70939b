"""Tokenizer, processor and Glm4v model, built locally from a config (no hub).

- `train_tokenizer`: a byte-level BPE learned from the corpus text, digits split one per token,
  with GLM-4.1V's special tokens and chat template;
- `build_processor`: transformers' `Glm4vProcessor` around that tokenizer, with image/video
  processors sized by the config;
- `build_model`: `Glm4vForConditionalGeneration` from `ModelConfig`, random init, token ids
  resolved from the tokenizer (never hard-coded).
"""

from __future__ import annotations

from pathlib import Path

from typing import Iterable

from model_src.config import ModelConfig

# Control tokens: stripped when decoding with skip_special_tokens=True.
CONTROL_TOKENS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<|image|>", "<|video|>",
]
# Format tokens the model writes and the verifiers read: kept when decoding.
FORMAT_TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "<|begin_of_box|>", "<|end_of_box|>"]
MEDIA_TOKENS = ["<|begin_of_image|>", "<|image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|video|>",
                "<|end_of_video|>"]
EOS_TOKEN = "<|endoftext|>"
ASSISTANT_TOKEN = "<|assistant|>"
END_OF_IMAGE_TOKEN = "<|end_of_image|>"

# GLM-4.1V's chat layout: `[gMASK]<sop><|user|>\n...<|assistant|>\n`, images as
# `<|begin_of_image|><|image|><|end_of_image|>` (the processor expands `<|image|>` per patch group).
CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' %}<|system|>{{ '\\n' }}{{ message.content }}"
    "{%- elif message.role == 'user' %}<|user|>{{ '\\n' }}"
    "{%- if message.content is string %}{{ message.content }}"
    "{%- else %}{%- for item in message.content %}"
    "{%- if item.type == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{%- elif item.type == 'video' %}<|begin_of_video|><|video|><|end_of_video|>"
    "{%- elif item.type == 'text' %}{{ item.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{%- elif message.role == 'assistant' %}<|assistant|>{{ '\\n' }}"
    "{%- if message.content is string %}{{ message.content }}{%- else %}{{ message.content[0].text }}{%- endif %}"
    "{{ '<|endoftext|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{{ '\\n' }}{%- endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE over `texts` -> PreTrainedTokenizerFast with GLM's special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=CONTROL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        additional_special_tokens=[t for t in CONTROL_TOKENS if t != EOS_TOKEN],
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


VIDEO_MAX_FRAMES = 8  # frames a video's pixel budget covers at `model.max_pixels` each


def image_size_bounds(cfg: ModelConfig) -> dict[str, int]:
    """transformers' Glm4v image `size` for the config's bounds, which are pixels of one image.

    Glm4v's `smart_resize` repeats a still image to fill one temporal patch and compares frames x
    height x width with the bounds (it is called with `num_frames=temporal_patch_size`), so N pixels
    of one image are N x temporal_patch_size in its units. This is the one place that converts.

    >>> from model_src.config.recipe import ModelConfig
    >>> image_size_bounds(ModelConfig(min_pixels=56 * 56, max_pixels=112 * 112))
    {'shortest_edge': 6272, 'longest_edge': 25088}
    """
    frames = cfg.temporal_patch_size
    return {"shortest_edge": cfg.min_pixels * frames, "longest_edge": cfg.max_pixels * frames}


def video_size_bounds(cfg: ModelConfig) -> dict[str, int]:
    """Glm4v's video `size`: the bounds of frames x height x width of one clip, here up to
    VIDEO_MAX_FRAMES frames of `max_pixels` each and at least one temporal patch of `min_pixels`."""
    return {"shortest_edge": cfg.min_pixels * cfg.temporal_patch_size,
            "longest_edge": cfg.max_pixels * VIDEO_MAX_FRAMES}


def build_processor(tokenizer, cfg: ModelConfig):
    from transformers import Glm4vImageProcessor, Glm4vProcessor, Glm4vVideoProcessor

    common = dict(patch_size=cfg.patch_size, temporal_patch_size=cfg.temporal_patch_size,
                  merge_size=cfg.spatial_merge_size)
    image_processor = Glm4vImageProcessor(size=image_size_bounds(cfg), **common)
    video_processor = Glm4vVideoProcessor(size=video_size_bounds(cfg), **common)
    return Glm4vProcessor(image_processor=image_processor, tokenizer=tokenizer,
                          video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def apply_pixel_bounds(processor, cfg: ModelConfig) -> list[str]:
    """Give a loaded processor (released weights' `preprocessor_config.json`) the config's bounds:
    the profile, logged with every run, says what the model sees. Returns what changed, for the log."""
    from transformers.image_utils import SizeDict

    changed = []
    for part, want in (("image_processor", image_size_bounds(cfg)), ("video_processor", video_size_bounds(cfg))):
        proc = getattr(processor, part, None)
        if proc is None:
            continue
        have = {k: dict(proc.size or {}).get(k) for k in want}
        if have != want:
            changed.append(f"{part}.size {have} -> {want}")
            proc.size = SizeDict(**want)
    return changed


def glm4v_config(cfg: ModelConfig, tokenizer):
    from transformers import Glm4vConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in CONTROL_TOKENS}
    if cfg.vocab_size and cfg.vocab_size < len(tokenizer):
        raise ValueError(f"model.vocab_size {cfg.vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    return Glm4vConfig(
        text_config=dict(
            vocab_size=cfg.vocab_size or len(tokenizer),
            hidden_size=cfg.text_hidden_size,
            intermediate_size=cfg.text_intermediate_size,
            num_hidden_layers=cfg.text_num_layers,
            num_attention_heads=cfg.text_num_heads,
            num_key_value_heads=cfg.text_num_kv_heads,
            max_position_embeddings=cfg.max_position_embeddings,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": cfg.partial_rotary_factor,
                "mrope_section": list(cfg.mrope_section),
            },
            pad_token_id=tokenizer.pad_token_id,
            # transformers' Glm4v text attention always has q/k/v biases but its config has no such
            # field; vLLM reads it (default False) and would drop the trained biases. The released
            # GLM-4.1V config states it too.
            attention_bias=True,
        ),
        vision_config=dict(
            depth=cfg.vision_depth,
            hidden_size=cfg.vision_hidden_size,
            num_heads=cfg.vision_num_heads,
            intermediate_size=cfg.vision_intermediate_size,
            image_size=cfg.vision_image_size,
            patch_size=cfg.patch_size,
            spatial_merge_size=cfg.spatial_merge_size,
            temporal_patch_size=cfg.temporal_patch_size,
            out_hidden_size=cfg.text_hidden_size,
        ),
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
    )


def enable_activation_checkpointing(model) -> None:
    """Recompute activations in the backward pass. transformers renamed the switch; older releases
    (5.17 on the GPU hosts) only have the old name."""
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()


def stop_token_ids(tokenizer) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids("<|user|>")]


def build_model(cfg: ModelConfig, tokenizer, seed: int):
    """Random-init Glm4vForConditionalGeneration (fp32, CPU) with a matching generation config."""
    import torch
    from transformers import GenerationConfig, Glm4vForConditionalGeneration

    torch.manual_seed(seed)
    model = Glm4vForConditionalGeneration(glm4v_config(cfg, tokenizer))
    model.generation_config = GenerationConfig(
        eos_token_id=stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id,
        do_sample=False, max_new_tokens=64,
    )
    return model


def check_weights_location(path: str, timeout_s: float = 20.0) -> None:
    """Fail fast, naming `model.init_from`, when released weights are not where it says: a local
    folder needs config.json; an `s3://` prefix must list objects (boto3, within `timeout_s`).
    The CLI runs this before any stage, so a wrong path is not found only in pretraining."""
    from model_src.config import ConfigError

    if not str(path).startswith("s3://"):
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"config key 'model.init_from': {path} is not an HF-format folder (no config.json)")
        return
    import boto3
    from botocore.config import Config

    from model_src.storage import split_uri

    bucket, prefix = split_uri(str(path))
    client = boto3.client("s3", config=Config(connect_timeout=timeout_s, read_timeout=timeout_s,
                                              retries={"max_attempts": 1}))
    try:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/", MaxKeys=1)
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, no such bucket: all mean "not there"
        raise ConfigError(f"config key 'model.init_from': {path} cannot be listed ({type(exc).__name__})") from None
    if not listed.get("KeyCount"):
        raise ConfigError(f"config key 'model.init_from': no objects under {path}")


def load_model_and_processor(path: str):
    """Reload an HF-format folder (model, processor, tokenizer, template) written by
    `save_pretrained`: a local path, or an `s3://bucket/prefix` fetched first (see `fetch_s3`)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if str(path).startswith("s3://"):
        from model_src.storage import fetch_s3

        path = fetch_s3(str(path))
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor
