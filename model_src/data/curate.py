"""Curation: check every raw row, drop duplicates and eval leaks, recaption, balance, split.

Nothing is dropped silently: every input row ends in exactly one split or in the quarantine
table with a machine-readable `reason` (and a `detail`: the column at fault, or the id of the row
it duplicates), and `report.json` reconciles the counts (input = kept + quarantined, in total, per
reason and per domain). The corpus is streamed in batches of `batch_rows`: images are never held,
only ids and hashes (about 2.4 KB per row: bench/RESULTS.md), so memory grows slowly, not flat.

Passes (model_src/data/curation/, one module each, composed by `curate` below):
0. count every question (one column only): a question shared by `template_min_rows` rows or
   more is a template ("which digit is this?") that cannot leak an answer by itself;
1. eval rows (the generator's `split == "eval"`): checked and deduplicated; their image hashes,
   perceptual hashes and specific questions become the contamination index;
2. every other row: checked, dropped when it leaks an eval row (contamination) or repeats an
   earlier row (exact or near duplicate), then split by id hash into rl / sft / pretrain;
   pretraining captions are rebuilt from the generator's facts at `recaption_ratio` (rows without
   such facts, a user's own corpus, keep their caption);
3. the kept splits are rewritten with `sample_weight`, which gives every domain, and every task
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

    thinkpipe curate --input data/raw --output /tmp/curated
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from model_src.config import CurateConfig
from model_src.data.curation.checks import check_row
from model_src.data.curation.contamination import ContaminationIndex
from model_src.data.curation.hashing import Deduplicator, content_hash, row_phash
from model_src.data.curation.ledger import Ledger
from model_src.data.curation.reading import CurationError, iter_rows, shard_files
from model_src.data.curation.splitting import assign_split, recaption, with_caption
from model_src.data.curation.writing import CURATED_SCHEMA, QUARANTINE_SCHEMA, Writers, write_splits
from model_src.data.schema import verifier_for

# what other modules and tests use, named where they are defined
__all__ = ["curate", "CurationError", "CURATED_SCHEMA", "assign_split", "check_row", "content_hash", "recaption"]


def curate(input_path: str | Path, output_dirs: dict[str, str | Path], cfg: CurateConfig = CurateConfig(),
           *, progress: bool = False, validate: bool = True) -> dict:
    """Write `data.parquet` into each split folder (`output_dirs[split]`) and `kept.parquet`,
    `quarantine.parquet`, `report.json`, plots and Data Docs into `output_dirs['report']`.

    Returns the report; raises `CurationError` on unusable input and `quality.GateError` when
    the Great Expectations gate fails (outputs and report are written first, for the reviewer).
    """
    from tqdm import tqdm

    files = shard_files(input_path)
    report_dir = Path(output_dirs["report"])
    staging = report_dir / ".staging"
    writers = Writers()
    ledger = Ledger(report_dir / "quarantine.parquet", writers)
    duplicates = Deduplicator(cfg.near_dup_hamming)
    contamination = ContaminationIndex(files, cfg)  # pass 0: counts the template questions
    seen_ids: set[str] = set()
    bar = tqdm(total=sum(pq.ParquetFile(f).metadata.num_rows for f in files), desc="curate",
               disable=not progress, unit="row")

    def screened(eval_rows: bool):
        """(row, the image bytes a kept row carries, image digest, phash) of each structurally sound
        row with a new id; the rest quarantined."""
        for row in iter_rows(files, cfg.batch_rows, eval_rows=eval_rows):
            ledger.arrived(row)
            bar.update(1)
            problem, images, image_bytes = check_row(row, cfg)
            if problem is None and row["id"] in seen_ids:
                problem = ("duplicate_id", f"id: {row['id']}")
            if problem:
                ledger.quarantine(row, *problem)
                continue
            seen_ids.add(row["id"])
            # duplicates are judged on the bytes as they came, and quarantine keeps those; a kept
            # row carries the converted ones (check_image: CMYK, 16-bit, alpha, EXIF orientation)
            yield row, image_bytes, content_hash(row["images"]), row_phash(images)

    def keep(row: dict, split: str) -> None:
        ledger.kept_in(row, split)
        verifier = verifier_for(row["domain"], row["answer_type"], cfg.domains)
        writers.write(staging / f"{split}.parquet", {**row, "stage_split": split, "verifier": verifier}, CURATED_SCHEMA)

    # pass 1: eval rows, which also build the contamination index
    for row, image_bytes, digest, phash in screened(eval_rows=True):
        problem = duplicates.duplicate_of(row, digest, phash)
        if problem:
            ledger.quarantine(row, *problem)
            continue
        contamination.add_eval(row, digest, phash)
        keep({**row, "images": image_bytes, "caption_source": "original"}, "eval")
    # pass 2: everything else: leaks, then duplicates, then the split (and recaptions)
    for row, image_bytes, digest, phash in screened(eval_rows=False):
        problem = contamination.leak(row, digest, phash) or duplicates.duplicate_of(row, digest, phash)
        if problem:
            ledger.quarantine(row, *problem)
            continue
        split = assign_split(row["id"], cfg)
        keep(with_caption({**row, "images": image_bytes}, split, cfg), split)
    bar.close()
    # pass 3: balance weights, the final split files and kept.parquet
    writers.close(ledger.quarantine_path, QUARANTINE_SCHEMA)
    write_splits(writers, staging, output_dirs, report_dir, ledger.concepts, cfg.batch_rows,
                 {(name, task): w for name, domain in cfg.domains.items() for task, w in domain.task_weights.items()})

    report = ledger.report()
    (report_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    if validate:
        from model_src.data.quality import validate_outputs

        report["quality"] = validate_outputs(report_dir, report, cfg)
        (report_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return report
