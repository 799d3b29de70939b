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


def shard_files(input_path: str | Path, check: bool = True) -> list[Path]:
    """The parquet shards of a raw corpus (a folder of `*.parquet`, or one file), in order;
    schema-checked up front (`check`) so a bad file fails before any output is written."""
    path = Path(input_path)
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    if not files:
        raise CurationError(f"no *.parquet shards in {path}")
    for file in files if check else ():
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


def use_jemalloc_pool() -> None:
    """Arrow buffers from jemalloc, which hands freed pages back to the OS, instead of the default
    mimalloc, which kept them: the curate stage's peak at 500k rows was 401 MB with mimalloc, 325 MB
    with jemalloc (the same work; bench/RESULTS.md). A no-op where pyarrow was built without it."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:
        pass


def iter_batches(path: Path, batch_rows: int, columns: list[str] | None = None):
    """A parquet file's record batches, read as they are consumed: no pre-buffering of whole row
    groups (pyarrow's default reads ahead and, measured on a 155 MB split file, held 280 MB)."""
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20).iter_batches(batch_size=batch_rows,
                                                                                   columns=columns)


def _as_bytes(column: pa.Array) -> pa.Array:
    """A string column viewed as raw bytes (no UTF-8 validation), large or not."""
    return column.view(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())


def iter_file_rows(file: Path, batch_rows: int) -> Iterator[dict]:
    """The rows of one shard in order, `batch_rows` at a time. Text columns are decoded here so a
    non-UTF-8 value marks its row (`_bad_utf8` = column) instead of failing the batch; the value
    is kept backslash-escaped, so nothing is lost."""
    for batch in iter_batches(file, batch_rows, list(ROW_SCHEMA.names)):
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
