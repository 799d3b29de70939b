"""Readers for the formats users already have. Each yields (where, record) one record at a time:
`where` names the file and the record's place in it, for quarantine and provenance; nothing is
read whole (JSON arrays are decoded object by object, tar shards member by member, parquet and
Arrow in batches). A record the reader cannot decode is yielded as a `BadRecord`.
"""

from __future__ import annotations

import glob
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from model_src.data.ingest.mapping import Mapping, MappingError

BATCH_ROWS = 256
CHUNK_CHARS = 1 << 16


@dataclass(frozen=True)
class BadRecord:
    reason: str
    detail: str


def source_files(mapping: Mapping, suffixes: tuple[str, ...]) -> list[Path]:
    """The files a mapping's `source` names: a file, a folder's files with these suffixes, or a glob."""
    source = mapping.resolve(mapping.source)
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in suffixes)
    else:
        files = sorted(Path(p) for p in glob.glob(source, recursive=True))
    if not files:
        raise MappingError(f"{mapping.path}: source {mapping.source!r} names no {'/'.join(suffixes)} file")
    return files


def _jsonl(path: Path) -> Iterator[tuple[str, object]]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield f"{path.name}:{number}", json.loads(line)
            except ValueError as exc:
                yield f"{path.name}:{number}", BadRecord("record_malformed", f"line {number}: {exc}")


def _json_array(path: Path) -> Iterator[tuple[str, object]]:
    """The objects of a JSON array file, decoded one at a time from a sliding buffer."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8", errors="replace") as fh:
        buffer, pos, index, eof = fh.read(CHUNK_CHARS), 0, 0, False
        pos = len(buffer) - len(buffer.lstrip())
        if buffer[pos:pos + 1] != "[":
            raise MappingError(f"{path}: not a JSON array (use format jsonl for one object per line)")
        pos += 1
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(buffer) and not eof:
                more = fh.read(CHUNK_CHARS)
                buffer, pos, eof = buffer[pos:] + more, 0, not more
                continue
            if buffer[pos:pos + 1] == "]" or (eof and pos >= len(buffer)):
                return
            try:
                record, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError as exc:
                if eof:
                    raise MappingError(f"{path}: broken JSON at record {index} ({exc.msg}); records before it were "
                                       f"read, none after") from exc
                more = fh.read(CHUNK_CHARS)  # an object cut by the buffer's end: read on
                buffer, pos, eof = buffer[pos:] + more, 0, not more
                continue
            yield f"{path.name}[{index}]", record
            index += 1
            pos = end
            if pos > CHUNK_CHARS:
                buffer, pos = buffer[pos:], 0


def _parquet(path: Path) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
        for record in batch.to_pylist():
            yield f"{path.name}[{index}]", record
            index += 1


def _hf_dataset(folder: Path) -> Iterator[tuple[str, object]]:
    """A `datasets` `save_to_disk` folder, memory-mapped by `datasets` itself; image columns come
    back as their stored bytes and path, not decoded."""
    from datasets import Image as ImageFeature
    from datasets import load_from_disk

    dataset = load_from_disk(str(folder))
    for name, feature in dataset.features.items():
        if isinstance(feature, ImageFeature):
            dataset = dataset.cast_column(name, ImageFeature(decode=False))
    index = 0
    for batch in dataset.iter(batch_size=BATCH_ROWS):
        columns = list(batch)
        for i in range(len(batch[columns[0]]) if columns else 0):
            yield f"{folder.name}[{index}]", {c: batch[c][i] for c in columns}
            index += 1


_TEXT_EXTENSIONS = ("txt", "cls", "caption", "question", "answer")


def _webdataset(path: Path) -> Iterator[tuple[str, object]]:
    """WebDataset tar shards: consecutive members sharing a key (`0001.jpg`, `0001.json`) are one
    record, `{"__key__": key, "jpg": bytes, "json": {...}, "txt": "..."}`."""
    record: dict = {}
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = Path(member.name).name
            key, _, extension = name.partition(".")
            key = str(Path(member.name).parent / key)
            if record and record["__key__"] != key:
                yield f"{path.name}:{record['__key__']}", record
                record = {}
            record["__key__"] = key
            data = tar.extractfile(member).read()
            if extension == "json":
                try:
                    record[extension] = json.loads(data)
                except ValueError as exc:
                    record["__bad__"] = f"{member.name}: {exc}"
            elif extension in _TEXT_EXTENSIONS:
                record[extension] = data.decode("utf-8", errors="replace")
            else:
                record[extension] = data
    if record:
        yield f"{path.name}:{record['__key__']}", record


def iter_records(mapping: Mapping) -> Iterator[tuple[str, object]]:
    """Every record of a mapping's source, in file order."""
    if mapping.format == "hf_dataset":
        yield from _hf_dataset(Path(mapping.resolve(mapping.source)))
        return
    readers = {"jsonl": ((".jsonl", ".json"), _jsonl), "parquet": ((".parquet",), _parquet),
               "webdataset": ((".tar",), _webdataset)}
    if mapping.format == "llava":
        for path in source_files(mapping, (".json", ".jsonl")):
            yield from (_jsonl(path) if path.suffix == ".jsonl" else _json_array(path))
        return
    suffixes, reader = readers[mapping.format]
    for path in source_files(mapping, suffixes):
        yield from reader(path)


class ImageReader:
    """Image bytes from what a record holds: bytes, `{"bytes": ..., "path": ...}` (Hugging Face's
    image columns), or a path: absolute, relative to the mapping's `images_from`, or `s3://`
    (boto3, credentials and `AWS_ENDPOINT_URL` from the environment)."""

    def __init__(self, mapping: Mapping):
        self.root = mapping.resolve(mapping.images_from) if mapping.images_from else str(mapping.path.parent)
        self._s3 = None

    def read(self, value) -> bytes:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, dict):
            if value.get("bytes"):
                return bytes(value["bytes"])
            value = value.get("path")
        if not isinstance(value, str) or not value:
            raise FileNotFoundError(f"not an image: {str(value)[:80]!r}")
        location = value if value.startswith("s3://") or Path(value).is_absolute() else (
            f"{self.root.rstrip('/')}/{value}" if self.root.startswith("s3://") else str(Path(self.root) / value))
        if location.startswith("s3://"):
            return self._read_s3(location)
        return Path(location).read_bytes()

    def _read_s3(self, uri: str) -> bytes:
        import boto3

        from model_src.storage import split_uri

        if self._s3 is None:
            self._s3 = boto3.client("s3")
        bucket, key = split_uri(uri)
        try:
            return self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001 - a missing or unreadable object: this record's problem
            raise FileNotFoundError(f"{uri}: {type(exc).__name__}") from exc


def image_values(value) -> list:
    """One image or a list of them, as a list."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]
