"""Atomic, complete training checkpoints.

A checkpoint is a folder `step-<N>` holding `state.pt` (model, optimizer and scheduler state,
every RNG state) and `meta.json` (step, MLflow run id, anything the loop needs to continue such as
the data position or the curriculum state). It is written into a temporary folder and renamed into
place, so a process killed mid-write leaves either the previous checkpoint or the new one, never a
torn one. Only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

PREFIX = "step-"


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(folder: str | Path, step: int, model, optimizer, scheduler, meta: dict, keep: int = 2,
                    extra_state: dict | None = None) -> Path:
    """`meta` must be JSON; `extra_state` holds anything else the loop needs (e.g. its own RNG)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None, "rng": rng_state(),
             "extra": extra_state or {}}
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=2, sort_keys=True))
    for file in tmp.iterdir():  # durable before the rename makes it visible
        with open(file, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                  and (p / "meta.json").is_file() and (p / "state.pt").is_file())


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_meta(path: str | Path) -> dict:
    return json.loads((Path(path) / "meta.json").read_text())


def load_checkpoint(path: str | Path, model, optimizer, scheduler) -> dict:
    """Restore everything saved by `save_checkpoint`; returns its meta (with `step`) and, under
    `extra_state`, what the loop saved besides."""
    state = torch.load(Path(path) / "state.pt", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return {**load_meta(path), "extra_state": state.get("extra", {})}
