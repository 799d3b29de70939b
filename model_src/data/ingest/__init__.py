"""Bring your own data: turn the formats users have into thinkpipe's row schema, before the pin.

    thinkpipe ingest --mapping receipts.yaml --mapping llava.yaml --out data/raw
    dvc commit data.dvc   # pin what was ingested; the DAG's lineage starts from the pin
    thinkpipe run

Each source is described by a mapping file (`mapping.py`: format, source, domain, task, answer
type, licence, provenance, and where each row field sits in a record); the formats are Hugging
Face `save_to_disk` folders and parquet shards with an image column, LLaVA-style JSON/JSONL,
WebDataset tar shards, and JSONL with image paths (local or `s3://`) (`formats.py`). Records are
streamed and written as parquet shards of `ROW_SCHEMA` rows, `<mapping>-<n>.parquet`.

A record that cannot be mapped (a path with nothing there, an image that cannot be read, an
empty question, a difficulty outside [0, 1]) goes to `ingest_quarantine.jsonl` with its reason
and the record itself (binary values summarised), never aborting the run: records in = rows out +
quarantined, per mapping, in `ingest_report.json`. Curation then checks the rows as it checks any
corpus (images, answer formats, duplicates, leaks).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from model_src.data.ingest.formats import BadRecord, ImageReader, image_values, iter_records
from model_src.data.ingest.mapping import Mapping, MappingError, Missing, get_path, load_mapping, value_of

__all__ = ["ingest", "load_mapping", "MappingError", "to_row"]

SHARD_ROWS = 1000
QUARANTINE_FILE = "ingest_quarantine.jsonl"
REPORT_FILE = "ingest_report.json"
_PLACEHOLDERS = ("<image>", "<video>")


class Unmappable(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _text(record, mapping: Mapping, name: str, required: bool) -> str:
    path = mapping.field_path(name)
    if path is None:
        return ""
    try:
        value = get_path(record, path)
    except Missing:
        if required:
            raise Unmappable(f"{name}_missing", f"fields.{name}: nothing at '{path}'") from None
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    return str(value) if value is not None else ""


def to_row(mapping: Mapping, where: str, record, images: ImageReader) -> dict:
    """One record as a row of the schema; `Unmappable` names what is wrong."""
    from model_src.data.domains.common import make_row

    if isinstance(record, BadRecord):
        raise Unmappable(record.reason, record.detail)
    if isinstance(record, dict) and record.get("__bad__"):
        raise Unmappable("record_malformed", record["__bad__"])
    try:
        constants = {key: value_of(getattr(mapping, key), record)
                     for key in ("domain", "task", "answer_type", "split", "difficulty")}
    except Missing as exc:
        raise Unmappable("field_missing", f"nothing at '{exc.args[0]}'") from None
    question = _text(record, mapping, "question", True)
    for placeholder in _PLACEHOLDERS:  # LLaVA marks where the image goes; the chat template places it
        question = question.replace(placeholder, "")
    question, answer = question.strip(), _text(record, mapping, "answer", True).strip()
    if not question or not answer:
        raise Unmappable("question_missing" if not question else "answer_missing", where)
    try:
        located = get_path(record, mapping.field_path("images"))
    except Missing:
        raise Unmappable("image_missing", f"fields.images: nothing at '{mapping.field_path('images')}'") from None
    data = []
    for value in image_values(located):
        try:
            data.append(images.read(value))
        except (OSError, ValueError) as exc:
            raise Unmappable("image_unreadable", str(exc)) from None
    if not data:
        raise Unmappable("image_missing", "fields.images: an empty list")
    try:
        difficulty = float(constants["difficulty"])
    except (TypeError, ValueError):
        difficulty = -1.0
    if not 0.0 <= difficulty <= 1.0:
        raise Unmappable("difficulty_invalid", f"difficulty: {constants['difficulty']!r}")
    split = str(constants["split"])
    if split not in ("train", "eval"):
        raise Unmappable("split_invalid", f"split: {split!r}")
    own_id = _text(record, mapping, "id", False)
    row_id = f"{mapping.name}:{own_id}" if own_id else f"{mapping.name}:{where}"
    user_meta = _text(record, mapping, "meta", False)
    try:
        extra = json.loads(user_meta) if user_meta else {}
    except ValueError:
        extra = {"meta": user_meta}
    meta = {"licence": mapping.licence, "provenance": mapping.provenance, "record": where,
            **(extra if isinstance(extra, dict) else {"meta": extra})}
    return make_row(row_id=row_id, domain=str(constants["domain"]), task=str(constants["task"]), split=split,
                    images=data, question=question, answer=answer, answer_type=str(constants["answer_type"]),
                    difficulty=difficulty, source=f"{mapping.provenance or mapping.name}|{where}",
                    caption=_text(record, mapping, "caption", False) or f"{question} {answer}",
                    reasoning=_text(record, mapping, "reasoning", False), meta=meta)


def _summarised(record) -> object:
    """The record for the quarantine file: binary values replaced by their size and hash."""
    if isinstance(record, BadRecord):
        return None
    if isinstance(record, (bytes, bytearray)):
        return {"bytes": len(record), "sha256": hashlib.sha256(record).hexdigest()}
    if isinstance(record, dict):
        return {str(k): _summarised(v) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [_summarised(v) for v in record]
    return record if isinstance(record, (str, int, float, bool)) or record is None else str(record)


class _ShardWriter:
    def __init__(self, out: Path, name: str, shard_rows: int):
        self.out, self.name, self.shard_rows = out, name, shard_rows
        self.rows: list[dict] = []
        self.shards = 0

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from model_src.data.schema import ROW_SCHEMA

        if self.rows:
            pq.write_table(pa.Table.from_pylist(self.rows, schema=ROW_SCHEMA),
                           self.out / f"{self.name}-{self.shards:05d}.parquet")
            self.shards += 1
            self.rows = []


def ingest(mapping_paths: list[str | Path], out: str | Path, *, shard_rows: int = SHARD_ROWS,
           progress: bool = False) -> dict:
    """Ingest every mapping's source into `out`; returns (and writes) the report."""
    from tqdm import tqdm

    mappings = [load_mapping(p) for p in mapping_paths]  # every mapping checked before any work
    names = Counter(m.name for m in mappings)
    if any(n > 1 for n in names.values()):
        raise MappingError(f"mapping file names must differ (they prefix row ids and shards): {sorted(names)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"mappings": {}}
    with open(out / QUARANTINE_FILE, "w", encoding="utf-8") as quarantine:
        for mapping in mappings:
            counts: Counter[str] = Counter()
            writer, reader = _ShardWriter(out, mapping.name, shard_rows), ImageReader(mapping)
            for where, record in tqdm(iter_records(mapping), desc=f"ingest {mapping.name}", unit="record",
                                      disable=not progress):
                counts["records"] += 1
                try:
                    writer.add(to_row(mapping, where, record, reader))
                    counts["rows"] += 1
                except Unmappable as exc:
                    counts[f"quarantined/{exc.reason}"] += 1
                    quarantine.write(json.dumps({"mapping": str(mapping.path), "record": where, "reason": exc.reason,
                                                 "detail": exc.detail, "content": _summarised(record)},
                                                ensure_ascii=False) + "\n")
            writer.flush()
            quarantined = sum(n for k, n in counts.items() if k.startswith("quarantined/"))
            assert counts["records"] == counts["rows"] + quarantined  # nothing lost between in and out
            report["mappings"][mapping.name] = {"format": mapping.format, "source": mapping.source,
                                                "shards": writer.shards, **dict(sorted(counts.items()))}
    report["records"] = sum(m["records"] for m in report["mappings"].values())
    report["rows"] = sum(m.get("rows", 0) for m in report["mappings"].values())
    report["quarantined"] = report["records"] - report["rows"]
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True))
    return report
