"""The eval split as an index, and the training rows that would leak it.

A training row leaks an eval row when it has the same image bytes, a near-identical image with the
same answer, or a specific (non-template) question with the same answer. Questions shared by
`template_min_rows` rows or more are templates ("which digit is this?") and leak nothing alone.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from model_src.config import CurateConfig
from model_src.data.curation.hashing import NearDupIndex, normalize_text
from model_src.data.curation.reading import _as_bytes


def _question_key(normalized: str) -> bytes:
    return hashlib.blake2b(normalized.encode(), digest_size=8).digest()


def template_questions(files: list[Path], cfg: CurateConfig) -> set[bytes]:
    """Keys of the questions at least `template_min_rows` rows share (read from one column)."""
    seen: Counter = Counter()
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=cfg.batch_rows * 8, columns=["question"]):
            for value in _as_bytes(batch.column(0)).to_pylist():
                if value is not None:
                    seen[_question_key(normalize_text(value.decode("utf-8", errors="backslashreplace")))] += 1
    return {key for key, n in seen.items() if n >= cfg.template_min_rows}




class ContaminationIndex:
    def __init__(self, files: list[Path], cfg: CurateConfig):
        self.templates = template_questions(files, cfg)
        self.content: dict[str, str] = {}
        self.near = NearDupIndex(cfg.near_dup_hamming)
        self.answers: dict[tuple[str, str], str] = {}

    def add_eval(self, row: dict, image_digest: str, phash: int) -> None:
        question, answer = normalize_text(row["question"]), normalize_text(row["answer"])
        self.content.setdefault(image_digest, row["id"])
        self.near.add(answer, phash, row["id"])
        if _question_key(question) not in self.templates:
            self.answers.setdefault((question, answer), row["id"])

    def leak(self, row: dict, image_digest: str, phash: int) -> tuple[str, str] | None:
        """(reason, detail) when a training row leaks an eval row, else None."""
        question, answer = normalize_text(row["question"]), normalize_text(row["answer"])
        twin = self.content.get(image_digest) or self.near.find(answer, phash)
        if twin:
            return "contaminated_image", f"image matches eval row {twin}"
        if (question, answer) in self.answers:
            return "contaminated_question", f"question and answer of eval row {self.answers[(question, answer)]}"
        return None
