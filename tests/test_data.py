"""The generator is deterministic and pinned; curation quarantines bad rows and reconciles counts."""

from __future__ import annotations

import io
import subprocess
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from model_src.config import CurateConfig
from model_src.data.curate import CurationError, assign_split, curate, read_split
from model_src.data.generate import GeneratorConfig, generate_corpus, png_bytes
from model_src.data.schema import ROW_SCHEMA, SPLITS
from model_src.lineage import dvc_dir_hash, dvc_pin
from tests.conftest import ROOT, THINKPIPE

SMALL = GeneratorConfig(num_arithmetic=20, num_digit_recognition=20, num_digit_sum=10)


def test_generator_is_byte_identical_for_a_seed(tmp_path):
    generate_corpus(tmp_path / "a", SMALL)
    generate_corpus(tmp_path / "b", SMALL)
    for name in ("stem.parquet", "digits.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    other = GeneratorConfig(seed=99, num_arithmetic=20, num_digit_recognition=20, num_digit_sum=10)
    generate_corpus(tmp_path / "c", other)
    assert (tmp_path / "a" / "stem.parquet").read_bytes() != (tmp_path / "c" / "stem.parquet").read_bytes()


def test_digits_are_sklearns_real_handwritten_digits(tmp_path):
    from sklearn.datasets import load_digits

    generate_corpus(tmp_path, SMALL)
    rows = [r for r in pq.read_table(tmp_path / "digits.parquet").to_pylist() if r["task"] == "digit_recognition"]
    digits = load_digits()
    for row in rows[:5]:
        index = int(row["source"].split("#")[1])
        assert row["answer"] == str(digits.target[index])


def test_committed_pin_matches_the_regenerated_corpus(tmp_path):
    """`make data` regenerates when the remote is empty: the result must hash to data.dvc's pin."""
    proc = subprocess.run([*THINKPIPE, "data", "--out", str(tmp_path / "raw"), "--check-pin", str(ROOT / "data.dvc")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    pinned, _ = dvc_pin(ROOT)
    assert dvc_dir_hash(tmp_path / "raw") == pinned


def _write_rows(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), folder / "rows.parquet")


def _row(i: int, **changes) -> dict:
    row = {"id": f"r{i}", "domain": "stem", "task": "arithmetic",
           "images": [png_bytes(Image.new("RGB", (56, 56), "white"))], "question": "What is 1 + 1?",
           "answer": "2", "answer_type": "integer", "difficulty": 0.2, "source": "test", "caption": "c",
           "reasoning": "1 plus 1 is 2."}
    row.update(changes)
    return row


def test_curation_quarantines_bad_rows_with_reasons_and_reconciles(tmp_path):
    huge = io.BytesIO()
    Image.new("L", (1, 1)).save(huge, format="PNG")
    header_bomb = bytearray(huge.getvalue())
    header_bomb[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width/height: 100k x 100k
    header_bomb[29:33] = zlib.crc32(bytes(header_bomb[12:29])).to_bytes(4, "big")  # a valid header CRC
    rows = [_row(i) for i in range(40)] + [
        _row(100, images=[b"not a png"]),
        _row(101, images=[png_bytes(Image.new("RGB", (56, 56)))[:40]]),
        _row(102, images=[b""]),
        _row(103, images=[bytes(header_bomb)]),
        _row(104, answer=""),
        _row(105, question="   "),
        _row(106, images=[png_bytes(Image.new("RGB", (4000, 10)))]),
        _row(0),  # duplicate id
    ]
    _write_rows(tmp_path / "raw", rows)
    outputs = {name: tmp_path / "out" / name for name in (*SPLITS, "report")}
    report = curate(tmp_path / "raw", outputs, CurateConfig())
    assert report["input_rows"] == len(rows) == report["kept_rows"] + report["quarantined_rows"]
    assert report["quarantine_reasons"] == {
        "image_corrupt": 2, "image_empty": 1, "image_too_many_pixels": 1, "answer_missing": 1,
        "question_missing": 1, "image_aspect_ratio": 1, "duplicate_id": 1}
    quarantine = pq.read_table(outputs["report"] / "quarantine.parquet").to_pylist()
    assert {r["id"] for r in quarantine} >= {"r100", "r101", "r102", "r103", "r104", "r105", "r106"}
    kept_ids = [r["id"] for split in SPLITS for r in read_split(outputs[split])]
    assert len(kept_ids) == len(set(kept_ids)) == 40  # splits are disjoint and lose nothing


def test_split_is_stable_per_row_id():
    cfg = CurateConfig()
    assert all(assign_split(f"row-{i}", cfg) == assign_split(f"row-{i}", cfg) for i in range(50))
    shares = [assign_split(f"row-{i}", cfg) for i in range(4000)]
    assert shares.count("eval") / 4000 == pytest.approx(cfg.eval_fraction, abs=0.03)


def test_missing_or_mistyped_column_fails_naming_file_and_column(tmp_path):
    table = pa.Table.from_pylist([_row(1)], schema=ROW_SCHEMA)
    (tmp_path / "a").mkdir()
    pq.write_table(table.drop(["answer"]), tmp_path / "a" / "x.parquet")
    with pytest.raises(CurationError, match=r"x\.parquet: missing column\(s\) answer"):
        curate(tmp_path / "a", {n: tmp_path / "o" / n for n in (*SPLITS, "report")}, CurateConfig())
    (tmp_path / "b").mkdir()
    mistyped = table.set_column(table.schema.get_field_index("difficulty"), "difficulty", pa.array(["high"]))
    pq.write_table(mistyped, tmp_path / "b" / "y.parquet")
    with pytest.raises(CurationError, match=r"y\.parquet: column 'difficulty'"):
        curate(tmp_path / "b", {n: tmp_path / "o" / n for n in (*SPLITS, "report")}, CurateConfig())
