"""Curation: check every raw row, drop duplicates and eval leaks, recaption, balance, split.

Nothing is dropped silently: every input row ends in exactly one split or in the quarantine
table with a machine-readable `reason` (and a `detail`: the column at fault, or the id of the row
it duplicates), and `report.json` reconciles the counts (input = kept + quarantined, in total, per
reason and per domain). Memory stays flat with the corpus size: rows stream in batches of
`batch_rows`, and the keys that find duplicates and leaks are joined on disk (bench/RESULTS.md).

Passes (model_src/data/curation/, one module each, composed by `curate` below):
A. scan (scan.py), per shard, so it fans out (the DAG's ParallelFor, or `workers` processes):
   every row's structural checks, and for the sound ones the keys: content digest, perceptual
   hash and its pigeonhole bands, question/answer keys;
B. join (join.py), once, in DuckDB on disk within `join_memory_mb`: duplicate ids; eval rows
   deduplicated; training rows that leak a kept eval row (contamination: a question shared by
   `template_min_rows` rows or more is a template, "which digit is this?", that leaks nothing by
   itself); then training rows deduplicated, greedily in shard order (a dropped row hides nothing);
C. write, in shard order: each row quarantined with its reason, or kept: eval rows in `eval`,
   training rows split by id hash into rl / sft / pretrain, pretraining captions rebuilt from the
   generator's facts at `recaption_ratio` (rows without such facts, a user's own corpus, keep
   their caption);
D. the kept splits are rewritten with `sample_weight`, which gives every domain, and every task
   inside a domain, the same sampling mass (domain/concept-balanced resampling);
then Great Expectations validates the outputs and gates the stage (`model_src/data/quality.py`).

Quarantine reasons:
- file level (the stage fails, naming file and column): missing or mistyped column, no shards;
- `id_missing`, `duplicate_id`, `split_invalid`, `domain_unknown` (neither built-in nor in
  `curate.domains`), `answer_type_mismatch` (a user domain's row of another answer type), `text_not_utf8`,
  `text_control_chars` (C0/C1 control characters other than tab and newline), `<column>_missing`,
  `<column>_too_long`, `answer_type_unknown`, `answer_malformed`, `box_out_of_range`,
  `difficulty_out_of_range`, `meta_invalid`, `frame_times_invalid` (not finite, or negative),
  `frame_times_mismatch`;
- `image_missing`, `image_empty`, `image_corrupt`, `image_zero_size`, `image_too_small` (a side
  under `min_image_side`), `image_too_many_pixels`, `image_aspect_ratio`, `image_mode` (a mode with
  no safe conversion: float images, 32-bit data). Images as real corpora have them are converted
  and kept: CMYK, YCbCr, greyscale or palette with alpha, bilevel, 16-bit greyscale (scaled to 8
  bits), and EXIF orientation (applied); the kept row carries the converted PNG;
- `exact_duplicate` (same images, question and answer), `near_duplicate` (same question and
  answer, perceptual hash within `near_dup_hamming` bits);
- `contaminated_image`: the same image bytes as an eval row, or a near-identical image with the
  same answer; `contaminated_question`: a specific (non-template) question with the same answer
  as an eval row. A perceptual hash alone is too coarse for rendered screens and text (two
  different login forms hash alike), so near matches also need the same answer.

    thinkpipe curate --input data/raw --output /tmp/curated [--workers 2]
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq

from model_src.config import CurateConfig
from model_src.data.curation.checks import check_row
from model_src.data.curation.hashing import content_hash
from model_src.data.curation.join import join_keys
from model_src.data.curation.ledger import Ledger
from model_src.data.curation.reading import CurationError, iter_batches, iter_file_rows, shard_files, use_jemalloc_pool
from model_src.data.curation.scan import scan_part
from model_src.data.curation.splitting import assign_split, recaption, with_caption
from model_src.data.curation.writing import CURATED_SCHEMA, QUARANTINE_SCHEMA, Writers, write_splits
from model_src.data.schema import verifier_for

# what other modules and tests use, named where they are defined
__all__ = ["curate", "plan_parts", "scan_part", "CurationError", "CURATED_SCHEMA", "assign_split", "check_row",
           "content_hash", "recaption"]


def plan_parts(input_path: str | Path, cfg: CurateConfig = CurateConfig()) -> list[int]:
    """The scan parts (0..k-1) of a corpus: one per shard, at most `scan_tasks`; every shard is
    schema-checked first, so a bad file fails before any task starts."""
    return _parts(shard_files(input_path), cfg)


def _parts(files: list[Path], cfg: CurateConfig) -> list[int]:
    return list(range(min(len(files), cfg.scan_tasks)))


def _scan_all(files: list[Path], keys_dir: Path, cfg: CurateConfig, workers: int, progress: bool) -> list[Path]:
    """Every part of the (already schema-checked) shards scanned here, `workers` processes at a
    time (what the DAG's ParallelFor does)."""
    parts = _parts(files, cfg)
    folders = [keys_dir / f"part-{part}" for part in parts]
    if workers <= 1:
        for part, folder in zip(parts, folders):
            scan_part(files, part, len(parts), folder, cfg, progress=progress)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for done in [pool.submit(scan_part, files, part, len(parts), folder, cfg) for part, folder in zip(parts, folders)]:
                done.result()
    return folders


def _keys_files(files: list[Path], keys_dirs: list[Path]) -> list[Path]:
    """The keys file of every shard, found in the scan parts' folders; fails naming a shard none has."""
    found = {}
    for folder in keys_dirs:
        for path in Path(folder).glob("*.parquet"):
            found[int(path.stem)] = path
    missing = [files[i].name for i in range(len(files)) if i not in found]
    if missing:
        raise CurationError(f"no scan output for shard(s) {', '.join(missing[:5])}: the scan parts do not cover the corpus")
    for i, file in enumerate(files):
        scanned, rows = pq.ParquetFile(found[i]).metadata.num_rows, pq.ParquetFile(file).metadata.num_rows
        if scanned != rows:
            raise CurationError(f"{found[i]}: scan output of {file.name} has {scanned} rows, the shard {rows}: "
                                "the corpus changed after the scan")
    return [found[i] for i in range(len(files))]


def _decisions(path: Path):
    """(file_index, {row_index: (reason, detail)}) of the rows the join quarantined, one shard at a
    time, in order (the file is sorted)."""
    current, rows = None, {}
    for batch in iter_batches(path, 65536):
        columns = batch.to_pydict()
        for f, r, reason, detail in zip(columns["file_index"], columns["row_index"], columns["reason"], columns["detail"]):
            if f != current:
                if current is not None:
                    yield current, rows
                current, rows = f, {}
            rows[r] = (reason, detail)
    if current is not None:
        yield current, rows


def curate(input_path: str | Path, output_dirs: dict[str, str | Path], cfg: CurateConfig = CurateConfig(),
           *, progress: bool = False, validate: bool = True, keys_dirs: list[str | Path] | None = None,
           workers: int = 1) -> dict:
    """Write `data.parquet` into each split folder (`output_dirs[split]`) and `kept.parquet`,
    `quarantine.parquet`, `report.json`, plots and Data Docs into `output_dirs['report']`.

    `keys_dirs`: the scan parts' folders when the scan ran elsewhere (the DAG's ParallelFor);
    without them the parts are scanned here, `workers` processes at a time.
    Returns the report; raises `CurationError` on unusable input and `quality.GateError` when
    the Great Expectations gate fails (outputs and report are written first, for the reviewer).
    """
    from tqdm import tqdm

    use_jemalloc_pool()
    files = shard_files(input_path)
    report_dir = Path(output_dirs["report"])
    work = report_dir / ".work"
    if keys_dirs is None:
        keys_dirs = _scan_all(files, work / "keys", cfg, workers, progress)
    keys_files = _keys_files(files, [Path(d) for d in keys_dirs])
    join_keys(keys_files, work / "decisions.parquet", cfg, work / "join")

    staging = report_dir / ".staging"
    writers = Writers()
    ledger = Ledger(report_dir / "quarantine.parquet", writers)
    decisions = _decisions(work / "decisions.parquet")
    pending = next(decisions, None)
    bar = tqdm(total=sum(pq.ParquetFile(f).metadata.num_rows for f in files), desc="curate: write",
               disable=not progress, unit="row")

    def keep(row: dict, split: str) -> None:
        ledger.kept_in(row, split)
        verifier = verifier_for(row["domain"], row["answer_type"], cfg.domains)
        writers.write(staging / f"{split}.parquet", {**row, "stage_split": split, "verifier": verifier}, CURATED_SCHEMA)

    # pass C: every row lands once, in shard order: quarantined with its reason, or kept in its split
    for file_index, (file, keys_file) in enumerate(zip(files, keys_files)):
        dropped = {}
        if pending is not None and pending[0] == file_index:
            dropped = pending[1]
            pending = next(decisions, None)
        keys = (row for batch in iter_batches(keys_file, cfg.batch_rows,
                                              ["row_index", "reason", "detail", "is_eval", "kept_images"])
                for row in batch.to_pylist())
        for row, record in zip(iter_file_rows(file, cfg.batch_rows), keys):
            ledger.arrived(row)
            bar.update(1)
            problem = (record["reason"], record["detail"]) if record["reason"] else dropped.get(record["row_index"])
            if problem:
                ledger.quarantine(row, *problem)  # the bytes as they came
            elif record["is_eval"]:
                keep({**row, "images": record["kept_images"] or row["images"], "caption_source": "original"}, "eval")
            else:  # a kept row carries the converted images (check_image: CMYK, 16-bit, alpha, EXIF)
                split = assign_split(row["id"], cfg)
                keep(with_caption({**row, "images": record["kept_images"] or row["images"]}, split, cfg), split)
    bar.close()
    # pass D: balance weights, the final split files and kept.parquet
    writers.close(ledger.quarantine_path, QUARANTINE_SCHEMA)
    write_splits(writers, staging, output_dirs, report_dir, ledger.concepts, cfg.batch_rows,
                 {(name, task): w for name, domain in cfg.domains.items() for task, w in domain.task_weights.items()},
                 cfg.domain_weights)
    shutil.rmtree(work, ignore_errors=True)

    report = ledger.report()
    (report_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    if validate:
        from model_src.data.quality import validate_outputs

        report["quality"] = validate_outputs(report_dir, report, cfg)
        (report_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return report
