"""Streaming parquet output: one writer per table, and the final split files with their weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from model_src.data.curation.balance import balance_weights
from model_src.data.curation.hashing import training_key
from model_src.data.curation.reading import iter_batches
from model_src.data.schema import ROW_SCHEMA, SPLITS, split_path

CURATED_SCHEMA = (ROW_SCHEMA.append(pa.field("stage_split", pa.string()))
                  .append(pa.field("caption_source", pa.string()))
                  .append(pa.field("sample_weight", pa.float64()))
                  .append(pa.field("verifier", pa.string())))  # schema.verifier_for: how RL and evaluation score it
QUARANTINE_SCHEMA = ROW_SCHEMA.append(pa.field("reason", pa.string())).append(pa.field("detail", pa.string()))


class Writers:
    """One streaming parquet writer per output table, opened lazily."""

    def __init__(self):
        self.writers: dict[Path, tuple[pq.ParquetWriter, list[dict], pa.Schema]] = {}

    def write(self, path: Path, row: dict, schema: pa.Schema, flush_at: int = 256) -> None:
        if path not in self.writers:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writers[path] = (pq.ParquetWriter(path, schema, compression="zstd"), [], schema)
        writer, buffer, _ = self.writers[path]
        buffer.append({name: row.get(name) for name in schema.names})
        if len(buffer) >= flush_at:
            self._flush(path)

    def _flush(self, path: Path) -> None:
        writer, buffer, schema = self.writers[path]
        if buffer:
            writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
            buffer.clear()

    def close(self, path: Path, schema: pa.Schema) -> None:
        """Flush and close `path`, writing an empty table when nothing was written."""
        if path not in self.writers:
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(schema.empty_table(), path)
            return
        self._flush(path)
        self.writers.pop(path)[0].close()




TRAIN_KEYS_FILE = "train_keys.txt"  # the training rows' image keys (hashing.training_key), one a line


def write_splits(writers: Writers, staging: Path, output_dirs: dict, report_dir: Path,
                 concepts: dict[str, Counter], batch_rows: int, task_weights: dict | None = None,
                 domain_weights: dict[str, float] | None = None) -> None:
    """Each staged split rewritten into its folder with `sample_weight`, and all of them into
    kept.parquet; the staging folder is removed. `task_weights` ({(domain, task): weight}, a user
    domain's `task_weights`) scales the balanced weights of those tasks, `domain_weights` (the data
    mix) those of whole domains."""
    kept_path = report_dir / "kept.parquet"
    trained: set[str] = set()  # what a model trained on this corpus saw: every split's images but eval's
    for split in SPLITS:
        writers.close(staging / f"{split}.parquet", CURATED_SCHEMA)
    for split in SPLITS:
        weights = balance_weights(concepts[split], task_weights, domain_weights) if concepts[split] else {}
        out_path = split_path(output_dirs[split])
        for batch in iter_batches(staging / f"{split}.parquet", batch_rows):
            for row in batch.to_pylist():
                row["sample_weight"] = weights[(row["domain"], row["task"])]
                if split != "eval":
                    trained.add(training_key(row["images"]))
                writers.write(out_path, row, CURATED_SCHEMA)
                writers.write(kept_path, row, CURATED_SCHEMA)
        writers.close(out_path, CURATED_SCHEMA)
        (staging / f"{split}.parquet").unlink()
    writers.close(kept_path, CURATED_SCHEMA)
    (report_dir / TRAIN_KEYS_FILE).write_text("".join(f"{k}\n" for k in sorted(trained)))
    staging.rmdir()
