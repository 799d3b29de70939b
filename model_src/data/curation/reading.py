"""The raw corpus: its parquet shards, schema-checked up front, streamed row by row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from model_src.data.schema import ROW_SCHEMA

TEXT_COLUMNS = tuple(f.name for f in ROW_SCHEMA if f.type == pa.string())


class CurationError(ValueError):
    """The input cannot be curated at all (no shards, a missing or mistyped column)."""


def shard_files(input_path: str | Path) -> list[Path]:
    """The parquet shards of a raw corpus (a folder of `*.parquet`, or one file), schema-checked
    up front so a bad file fails before any output is written."""
    path = Path(input_path)
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    if not files:
        raise CurationError(f"no *.parquet shards in {path}")
    for file in files:
        try:
            schema = pq.read_schema(file)
        except Exception as exc:  # noqa: BLE001 - any unreadable footer
            raise CurationError(f"{file}: not a readable parquet file ({exc})") from exc
        for field in ROW_SCHEMA:
            if field.name not in schema.names:
                raise CurationError(f"{file}: missing column '{field.name}' (expected {field.type})")
            got = schema.field(field.name).type
            if got != field.type and not (field.type == pa.string() and got == pa.large_string()):
                raise CurationError(f"{file}: column '{field.name}' has type {got}, expected {field.type}")
    return files


def _as_bytes(column: pa.Array) -> pa.Array:
    """A string column viewed as raw bytes (no UTF-8 validation), large or not."""
    return column.view(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())


def iter_rows(files: list[Path], batch_rows: int, eval_rows: bool) -> Iterator[dict]:
    """The rows of every shard whose `split` is "eval" (`eval_rows`) or anything else, `batch_rows`
    at a time; the other rows are filtered out in Arrow, before their images become Python bytes.
    Text columns are decoded here so a non-UTF-8 value marks its row (`_bad_utf8` = column)
    instead of failing the batch; the value is kept backslash-escaped, so nothing is lost."""
    import pyarrow.compute as pc

    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows, columns=list(ROW_SCHEMA.names)):
            is_eval = pc.fill_null(pc.equal(_as_bytes(batch.column("split")), pa.scalar(b"eval")), False)
            batch = batch.filter(is_eval if eval_rows else pc.invert(is_eval))
            columns = {}
            for name in ROW_SCHEMA.names:
                column = batch.column(name)
                columns[name] = _as_bytes(column).to_pylist() if name in TEXT_COLUMNS else column.to_pylist()
            for i in range(batch.num_rows):
                row = {"_bad_utf8": None}
                for name in ROW_SCHEMA.names:
                    value = columns[name][i]
                    if name in TEXT_COLUMNS and value is not None:
                        try:
                            value = value.decode("utf-8")
                        except UnicodeDecodeError:
                            value = value.decode("utf-8", errors="backslashreplace")
                            row["_bad_utf8"] = row["_bad_utf8"] or name
                    row[name] = value
                yield row
