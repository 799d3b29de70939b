"""Pass A, one shard at a time: every row's structural check and the keys the global join needs.

Shards are independent here, so this is the work that fans out (a `dsl.ParallelFor` over parts of
the shard list on a cluster, a process pool in `thinkpipe curate --workers N`). A part writes one
small keys file per shard it owns (`<shard number>.parquet`, rows in shard order): the check's
verdict, the hashed keys, the perceptual hash and its band keys, and the converted image bytes of
the few rows whose images had to be converted. No image bytes otherwise: the writing pass reads
the raw shard again beside it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from model_src.config import CurateConfig
from model_src.data.curation.checks import check_row
from model_src.data.curation.hashing import band_keys, content_hash, key, normalize_text, phash_words, row_phash
from model_src.data.curation.reading import iter_file_rows, use_jemalloc_pool

SCAN_SCHEMA = pa.schema([
    ("file_index", pa.int32()), ("row_index", pa.int64()), ("is_eval", pa.bool_()), ("id", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()),  # the structural check's verdict; null: sound
    ("question_key", pa.binary()),  # every row with a question: template questions are counted over all
    # sound rows only:
    ("group_key", pa.binary()),     # question, answer, image count: duplicates share it
    ("exact_key", pa.binary()),     # image bytes, question, answer
    ("answer_key", pa.binary()),    # near-identical image + same answer leaks an eval row
    ("qa_key", pa.binary()),        # specific question + same answer leaks an eval row
    ("image_key", pa.binary()),     # the same image bytes leak an eval row
    ("p0", pa.int64()), ("p1", pa.int64()), ("p2", pa.int64()), ("p3", pa.int64()),  # perceptual hash
    ("bands", pa.list_(pa.int64())),  # its pigeonhole band keys (hashing.band_keys)
    ("kept_images", pa.list_(pa.binary())),  # null unless an image had to be converted (check_image)
])


def keys_path(folder: Path, file_index: int) -> Path:
    return Path(folder) / f"{file_index:06d}.parquet"


def part_files(files: list[Path], part: int, parts: int) -> list[tuple[int, Path]]:
    """The shards (number, path) part `part` of `parts` owns: every `parts`-th, so parts stay even
    when shards differ in size by position (the last shard is often short)."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} is not in [0, {parts})")
    return [(i, file) for i, file in enumerate(files) if i % parts == part]


def scan_row(row: dict, file_index: int, row_index: int, cfg: CurateConfig) -> dict:
    """The keys record of one raw row."""
    problem, images, kept = check_row(row, cfg)
    record = {"file_index": file_index, "row_index": row_index, "is_eval": row["split"] == "eval",
              "id": row["id"], "reason": problem[0] if problem else None, "detail": problem[1] if problem else None,
              "question_key": key(normalize_text(row["question"])) if row["question"] is not None else None}
    if problem:
        return record
    question, answer = normalize_text(row["question"]), normalize_text(row["answer"])
    digest = content_hash(row["images"])  # on the bytes as they came: duplicates are judged on those
    phash = row_phash(images)
    p0, p1, p2, p3 = phash_words(phash)
    return {**record, "group_key": key(question, answer, str(len(row["images"]))),
            "exact_key": key(digest, question, answer), "answer_key": key(answer),
            "qa_key": key(question, answer), "image_key": bytes.fromhex(digest)[:16],
            "p0": p0, "p1": p1, "p2": p2, "p3": p3, "bands": band_keys(phash, cfg.near_dup_hamming),
            "kept_images": kept if kept != row["images"] else None}


def scan_part(files: list[Path], part: int, parts: int, out_dir: str | Path, cfg: CurateConfig = CurateConfig(),
              progress: bool = False) -> int:
    """Write the keys file of each shard of part `part`; returns the rows scanned."""
    from tqdm import tqdm

    use_jemalloc_pool()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    owned = part_files(files, part, parts)
    total = 0
    with tqdm(total=sum(pq.ParquetFile(f).metadata.num_rows for _, f in owned), desc=f"scan part {part}",
              disable=not progress, unit="row") as bar:
        for file_index, file in owned:
            with pq.ParquetWriter(keys_path(out_dir, file_index), SCAN_SCHEMA, compression="zstd") as writer:
                buffer: list[dict] = []
                for row_index, row in enumerate(iter_file_rows(file, cfg.batch_rows)):
                    buffer.append(scan_row(row, file_index, row_index, cfg))
                    if len(buffer) == cfg.batch_rows:
                        writer.write_table(pa.Table.from_pylist(buffer, schema=SCAN_SCHEMA))
                        bar.update(len(buffer))
                        total, buffer = total + len(buffer), []
                writer.write_table(pa.Table.from_pylist(buffer, schema=SCAN_SCHEMA))
                bar.update(len(buffer))
                total += len(buffer)
    return total
