"""Where a training row goes (a deterministic split by its id's hash), and its factual recaption."""

from __future__ import annotations

import hashlib
import json

from model_src.config import CurateConfig


def _unit(*parts: str) -> float:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:8], "big") / 2**64


def assign_split(row_id: str, cfg: CurateConfig) -> str:
    """Deterministic stage split of a training row from its id's hash: RL, SFT, then pretraining."""
    u = _unit(row_id)
    if u < cfg.rl_fraction:
        return "rl"
    if u < cfg.rl_fraction + cfg.sft_fraction:
        return "sft"
    return "pretrain"


def recaption(row: dict) -> str | None:
    """The factual caption rebuilt from the generator's metadata (docs/recipe.md section 2), or
    None when the row has no such facts: a domain with no generator, or `meta` that is not the
    generator's (a user's own corpus carries any JSON object there)."""
    from model_src.data.domains import DOMAINS as GENERATORS

    generator = GENERATORS.get(row["domain"])
    if generator is None:
        return None
    try:
        caption = generator.factual_caption(row["task"], json.loads(row["meta"] or "{}"))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):  # other facts than the generator's
        return None
    return caption if isinstance(caption, str) and caption.strip() else None


def with_caption(row: dict, split: str, cfg: CurateConfig) -> dict:
    """The row with `caption_source`; `recaption_ratio` of the pretraining rows (by id hash) get
    their caption rebuilt from the generator's facts."""
    if split == "pretrain" and _unit(row["id"], "recaption") < cfg.recaption_ratio:
        caption = recaption(row)
        if caption is not None:
            return {**row, "caption": caption, "caption_source": "recaptioned"}
    return {**row, "caption_source": "original"}
