"""Atomic, complete training checkpoints.

A checkpoint is a folder `step-<N>` holding `state.pt` (model, optimizer and scheduler state,
every RNG state) and `meta.json` (step, MLflow run id, anything the loop needs to continue such as
the data position or the curriculum state). It is written into a temporary folder and renamed into
place, so a process killed mid-write leaves either the previous checkpoint or the new one, never a
torn one. Only the newest `keep` checkpoints are kept. `meta.json` records the sha256 of
`state.pt`; loading checks it, reads the state with `weights_only=True`, and `resume_latest` falls
back to an older checkpoint when the newest does not verify or load. DeepSpeed's own checkpoints
get the same guarantee from a checksum record of every file (`save_deepspeed_checkpoint`,
`resume_deepspeed`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from model_src.storage import sha256_file

PREFIX = "step-"
DS_FOLDER = "deepspeed"  # under a stage's checkpoint folder: the DeepSpeed engine's tags
STATE_SHA256 = "state_sha256"  # meta.json's record of state.pt


def rng_state() -> dict:
    """Every RNG's state in types `torch.load(weights_only=True)` reads (numpy's keys as a list)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
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
    digest = sha256_file(tmp / "state.pt")  # checked before the state is read back (load_checkpoint)
    (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, STATE_SHA256: digest}, indent=2, sort_keys=True))
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


def newest_run_id(stage_folder: str | Path) -> str | None:
    """The MLflow run id in the newest checkpoint of a stage's folder, plain or DeepSpeed (its tags
    under `deepspeed/`, counted once their checksum record is written), if there is one."""
    stage_folder = Path(stage_folder)
    ds = stage_folder / DS_FOLDER
    tags = [p for p in (ds.glob(f"{PREFIX}*") if ds.is_dir() else [])
            if (p / DS_CHECKSUMS).is_file() and (p / "meta.json").is_file()]
    metas = [load_meta(p) for p in list_checkpoints(stage_folder) + tags]
    return max(metas, key=lambda meta: meta["step"]).get("run_id") or None if metas else None


def load_meta(path: str | Path) -> dict:
    return json.loads((Path(path) / "meta.json").read_text())


class CorruptCheckpoint(RuntimeError):
    pass


def load_checkpoint(path: str | Path, model, optimizer, scheduler) -> dict:
    """Restore everything saved by `save_checkpoint`; returns its meta (with `step`) and, under
    `extra_state`, what the loop saved besides. The state file must match the sha256 its meta
    recorded, and is read with `weights_only=True`: a checkpoint on a shared volume cannot run
    code in the process that loads it. Raises CorruptCheckpoint before touching the model."""
    path = Path(path)
    try:
        meta = load_meta(path)
        recorded = meta.get(STATE_SHA256)
        if recorded and sha256_file(path / "state.pt") != recorded:
            raise CorruptCheckpoint(f"{path}: state.pt does not match the sha256 its meta.json recorded")
        state = torch.load(path / "state.pt", weights_only=True)
    except CorruptCheckpoint:
        raise
    except Exception as exc:  # truncated, unpicklable, or holding something that is not plain data
        raise CorruptCheckpoint(f"{path}: cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from exc
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return {**meta, "extra_state": state.get("extra", {})}


def resume_latest(folder: str | Path, model, optimizer, scheduler) -> tuple[Path, dict] | None:
    """(checkpoint, meta) of the newest checkpoint in `folder` that verifies and loads, older ones
    tried when a newer one is corrupt (each refusal printed); None when there is none. Temp folders
    a killed writer left are removed first."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob(f".tmp-{PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
    for candidate in reversed(list_checkpoints(folder)):
        try:
            return candidate, load_checkpoint(candidate, model, optimizer, scheduler)
        except CorruptCheckpoint as exc:
            print(f"checkpoint: skipping {exc}", flush=True)
    return None


# DeepSpeed writes its own checkpoints (one shard per rank) and reads them with torch.load, which
# unpickles: code in a file on the shared volume would run in the training pods. So a run records
# the sha256 of every file it wrote, and resume loads only a tag whose files all match.
DS_CHECKSUMS = "thinkpipe-checksums.json"


def save_deepspeed_checkpoint(engine, folder: str | Path, step: int, client_state: dict) -> None:
    """`engine.save_checkpoint` on every rank, then rank 0 records every file's sha256 (written
    last, atomically: a tag without its record is not resumed from)."""
    from model_src.train.distributed import barrier, rank_and_world

    folder = Path(folder)
    tag = f"{PREFIX}{step:08d}"
    engine.save_checkpoint(str(folder), tag=tag, client_state=client_state)
    barrier()  # every rank's shard is on disk
    if rank_and_world()[0] == 0:
        # what the stage reads without unpickling anything: whose run this is (runner.py resumes it)
        (folder / tag / "meta.json").write_text(json.dumps({"step": step, "run_id": client_state.get("run_id", "")}))
        files = {p.relative_to(folder / tag).as_posix(): sha256_file(p)
                 for p in sorted((folder / tag).rglob("*")) if p.is_file() and p.name != DS_CHECKSUMS}
        tmp = folder / tag / f".{DS_CHECKSUMS}.tmp"
        tmp.write_text(json.dumps(files, indent=1, sort_keys=True))
        os.replace(tmp, folder / tag / DS_CHECKSUMS)
    barrier()


def verify_deepspeed_tag(path: Path) -> None:
    """Raise CorruptCheckpoint unless every file of the tag folder is one the run recorded, unchanged."""
    record = path / DS_CHECKSUMS
    if not record.is_file():
        raise CorruptCheckpoint(f"{path}: no {DS_CHECKSUMS} (written last: the save did not finish)")
    recorded = json.loads(record.read_text())
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != DS_CHECKSUMS}
    if present != set(recorded):
        extra, missing = sorted(present - set(recorded)), sorted(set(recorded) - present)
        raise CorruptCheckpoint(f"{path}: files not as recorded (unrecorded: {extra[:3]}, missing: {missing[:3]})")
    for name, digest in recorded.items():
        if sha256_file(path / name) != digest:
            raise CorruptCheckpoint(f"{path}: {name} does not match the sha256 the run recorded")


def resume_deepspeed(engine, folder: str | Path) -> dict | None:
    """The client state of the newest DeepSpeed tag in `folder` that verifies (rank 0 checks, every
    rank agrees), loaded on every rank; older tags tried when a newer one does not verify; None
    when there is none."""
    from model_src.train.distributed import all_reduce_sum, rank_and_world

    folder = Path(folder)
    tags = sorted((p for p in folder.glob(f"{PREFIX}*") if p.is_dir()), reverse=True) if folder.is_dir() else []
    for path in tags:
        ok = 1.0
        if rank_and_world()[0] == 0:
            try:
                verify_deepspeed_tag(path)
            except CorruptCheckpoint as exc:
                print(f"checkpoint: skipping {exc}", flush=True)
                ok = 0.0
        if all_reduce_sum(ok if rank_and_world()[0] == 0 else 0.0) > 0:
            _, client_state = engine.load_checkpoint(str(folder), tag=path.name)
            return client_state
    return None
