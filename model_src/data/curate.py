"""Curation: check every raw row, quarantine the bad ones with a reason, split the rest.

Nothing is dropped silently: every input row ends in exactly one split or in the quarantine
table, and `report.json` reconciles the counts (input = kept + quarantined, per reason and per
domain). Splits are decided by a hash of the row id, so a row keeps its split when others change.

    thinkpipe curate --input data/raw --output /tmp/curated
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from model_src.config import CurateConfig
from model_src.data.schema import ROW_SCHEMA, SPLITS

MAX_IMAGE_PIXELS = 4096 * 4096  # decompression-bomb ceiling, checked on the header before decoding
MAX_ASPECT_RATIO = 200.0
MAX_TEXT_CHARS = 4096


class CurationError(ValueError):
    pass


def read_raw(input_dir: str | Path) -> pa.Table:
    """All `*.parquet` shards of a raw corpus folder, checked against the row schema."""
    input_dir = Path(input_dir)
    files = sorted(input_dir.glob("*.parquet"))
    if not files:
        raise CurationError(f"no *.parquet shards in {input_dir}")
    tables = []
    for file in files:
        table = pq.read_table(file)
        missing = [n for n in ROW_SCHEMA.names if n not in table.column_names]
        if missing:
            raise CurationError(f"{file}: missing column(s) {', '.join(missing)}")
        for name in ROW_SCHEMA.names:
            want, got = ROW_SCHEMA.field(name).type, table.schema.field(name).type
            if want != got:
                raise CurationError(f"{file}: column '{name}' has type {got}, expected {want}")
        tables.append(table.select(ROW_SCHEMA.names).cast(ROW_SCHEMA))
    return pa.concat_tables(tables)


def check_image(data: bytes) -> str | None:
    """None when the PNG/JPEG decodes to a sane RGB/L image, else the quarantine reason."""
    if not data:
        return "image_empty"
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size  # header only: no pixels decoded yet
            if width == 0 or height == 0:
                return "image_zero_size"
            if width * height > MAX_IMAGE_PIXELS:
                return "image_too_many_pixels"
            if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
                return "image_aspect_ratio"
            if probe.mode not in ("RGB", "L", "RGBA", "P"):
                return "image_mode"
            probe.load()
    except Image.DecompressionBombError:
        return "image_too_many_pixels"
    except Exception:  # noqa: BLE001 - any decode failure is a corrupt image
        return "image_corrupt"
    return None


def check_row(row: dict) -> str | None:
    """None for a good row, else a machine-readable reason."""
    if not row["id"]:
        return "id_missing"
    if not row["images"]:
        return "image_missing"
    for image in row["images"]:
        reason = check_image(image)
        if reason:
            return reason
    for column in ("question", "answer", "domain"):
        value = row[column]
        if value is None or not value.strip():
            return f"{column}_missing"
        if len(value) > MAX_TEXT_CHARS:
            return f"{column}_too_long"
    if row["difficulty"] is None or not 0.0 <= row["difficulty"] <= 1.0:
        return "difficulty_out_of_range"
    return None


def assign_split(row_id: str, cfg: CurateConfig) -> str:
    """Deterministic split from the id's hash: eval first, then RL, SFT and pretraining."""
    u = int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "big") / 2**64
    if u < cfg.eval_fraction:
        return "eval"
    rest = (u - cfg.eval_fraction) / (1.0 - cfg.eval_fraction)
    if rest < cfg.rl_fraction:
        return "rl"
    if rest < cfg.rl_fraction + cfg.sft_fraction:
        return "sft"
    return "pretrain"


def curate(input_dir: str | Path, output_dirs: dict[str, str | Path], cfg: CurateConfig) -> dict:
    """Write `data.parquet` into each split folder and `quarantine.parquet` + `report.json` into
    `output_dirs['report']`; returns the report."""
    table = read_raw(input_dir)
    rows = table.to_pylist()
    seen_ids: set[str] = set()
    kept: dict[str, list[dict]] = {split: [] for split in SPLITS}
    quarantined: list[dict] = []
    for row in rows:
        reason = check_row(row)
        if reason is None and row["id"] in seen_ids:
            reason = "duplicate_id"
        if reason is not None:
            quarantined.append({**row, "reason": reason})
            continue
        seen_ids.add(row["id"])
        kept[assign_split(row["id"], cfg)].append(row)

    for split, split_rows in kept.items():
        folder = Path(output_dirs[split])
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(split_rows, schema=ROW_SCHEMA), folder / "data.parquet")
    report_dir = Path(output_dirs["report"])
    report_dir.mkdir(parents=True, exist_ok=True)
    quarantine_schema = ROW_SCHEMA.append(pa.field("reason", pa.string()))
    pq.write_table(pa.Table.from_pylist(quarantined, schema=quarantine_schema), report_dir / "quarantine.parquet")

    report = {
        "input_rows": len(rows),
        "kept_rows": sum(len(v) for v in kept.values()),
        "quarantined_rows": len(quarantined),
        "split_rows": {split: len(v) for split, v in kept.items()},
        "quarantine_reasons": dict(Counter(r["reason"] for r in quarantined)),
        "input_by_domain": dict(Counter(r["domain"] for r in rows)),
        "split_by_domain": {split: dict(Counter(r["domain"] for r in v)) for split, v in kept.items()},
    }
    assert report["input_rows"] == report["kept_rows"] + report["quarantined_rows"], report
    (report_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return report


def read_split(folder: str | Path) -> list[dict]:
    return pq.read_table(Path(folder) / "data.parquet").to_pylist()
