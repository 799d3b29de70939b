"""Scale-out curation: per-shard scans in any number of parts (and processes) and the global DuckDB
join give the same curated corpus as one pass, and the join keeps the greedy order's meaning (a row
dropped as a duplicate hides nothing; only kept eval rows can be leaked)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model_src.config import CurateConfig
from model_src.data.curate import CurationError, curate, plan_parts, scan_part
from model_src.data.curation.hashing import band_keys, key, phash_words
from model_src.data.curation.join import join_keys
from model_src.data.curation.reading import shard_files
from model_src.data.curation.scan import SCAN_SCHEMA
from model_src.data.generate import GeneratorConfig, generate_corpus
from model_src.data.schema import ROW_SCHEMA, SPLITS

CFG = CurateConfig(max_quarantine_share=1.0, batch_rows=64)


def _bits(*positions: int) -> int:
    return sum(1 << p for p in positions)


def _keys(row_index: int, id: str, phash: int, *, eval: bool = False, question: str = "Which digit?",
          answer: str = "7", image: str | None = None) -> dict:
    """A keys record as scan.py writes it, with a chosen perceptual hash."""
    image = image or f"img-{id}"
    p0, p1, p2, p3 = phash_words(phash)
    return {"file_index": 0, "row_index": row_index, "is_eval": eval, "id": id, "reason": None, "detail": None,
            "question_key": key(question), "group_key": key(question, answer, "1"),
            "exact_key": key(image, question, answer), "answer_key": key(answer), "qa_key": key(question, answer),
            "image_key": key(image), "p0": p0, "p1": p1, "p2": p2, "p3": p3,
            "bands": band_keys(phash, CFG.near_dup_hamming), "kept_images": None}


def _join(tmp_path, records: list[dict], cfg: CurateConfig = CFG) -> dict[str, tuple[str, str]]:
    keys = tmp_path / "000000.parquet"
    pq.write_table(pa.Table.from_pylist(records, schema=SCAN_SCHEMA), keys)
    counts = join_keys([keys], tmp_path / "decisions.parquet", cfg, tmp_path / "work")
    decisions = pq.read_table(tmp_path / "decisions.parquet").to_pylist()
    assert sum(counts.values()) == len(decisions)
    assert not (tmp_path / "work").exists()  # the database and its spill files are removed
    ids = {r["row_index"]: r["id"] for r in records}
    return {ids[d["row_index"]]: (d["reason"], d["detail"]) for d in decisions}


def test_the_join_is_greedy_a_dropped_row_hides_nothing(tmp_path):
    b, c = _bits(*range(6)), _bits(*range(10))  # b is 6 bits from a; c is 10 from a, 4 from b
    decided = _join(tmp_path, [
        _keys(0, "a", 0),
        _keys(1, "b", b),                     # near a: dropped
        _keys(2, "c", c),                     # near b only, and b was dropped: kept
        _keys(3, "b-copy", b, image="img-b"),  # b's bytes, but b is gone: a near duplicate of a
        _keys(4, "c-copy", c, image="img-c"),  # c's bytes and c was kept: an exact duplicate of c
        _keys(5, "other-answer", 0, answer="8"),  # a's hash, another answer: another group, kept
        _keys(6, "a", _bits(200)),            # a's id again
    ])
    assert decided == {"b": ("near_duplicate", "near duplicate of a"),
                       "b-copy": ("near_duplicate", "near duplicate of a"),
                       "c-copy": ("exact_duplicate", "duplicate of c"),
                       "a": ("duplicate_id", "id: a")}


def test_only_kept_eval_rows_are_leaked_and_templates_leak_nothing(tmp_path):
    far = _bits(*range(0, 256, 3))  # 86 bits from 0
    decided = _join(tmp_path, [
        _keys(0, "train-dup-id", far, question="q0", answer="0"),
        _keys(1, "e-kept", 0, eval=True, question="Name it.", answer="cat"),
        _keys(2, "e-dropped", _bits(1), eval=True, question="Name it.", answer="cat"),  # near e-kept
        _keys(3, "t-bytes-of-dropped", far, image="img-e-dropped", question="q3", answer="dog"),  # kept
        _keys(4, "t-bytes-of-kept", far, image="img-e-kept", question="q4", answer="cow"),
        _keys(5, "t-near", _bits(3, 4), question="q5", answer="cat"),
        _keys(6, "e-q", _bits(*range(0, 256, 5)), eval=True, question="What animal?", answer="cat"),
        _keys(11, "t-question", far ^ _bits(*range(7, 17)), question="What animal?", answer="cat"),
        _keys(7, "e-template", _bits(*range(1, 256, 3)), eval=True, question="Which digit?", answer="7"),
        _keys(8, "t-template", _bits(*range(2, 256, 3)), question="Which digit?", answer="7"),
        _keys(9, "t-template-2", _bits(*range(0, 200, 2)), question="Which digit?", answer="7"),
        _keys(10, "train-dup-id", _bits(100), eval=True, question="q10", answer="10"),  # eval comes first
    ])
    assert decided == {"e-dropped": ("near_duplicate", "near duplicate of e-kept"),
                       "t-bytes-of-kept": ("contaminated_image", "image matches eval row e-kept"),
                       "t-near": ("contaminated_image", "image matches eval row e-kept"),
                       "t-question": ("contaminated_question", "question and answer of eval row e-q"),
                       "train-dup-id": ("duplicate_id", "id: train-dup-id")}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A small generated corpus and a last shard of copies: duplicates of training rows and
    eval rows repeated as training rows (leaks)."""
    folder = tmp_path_factory.mktemp("raw")
    generate_corpus(folder, GeneratorConfig().scaled(0.1))
    rows = [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    copies = [{**r, "id": f"copy-{k}", "split": "train"} for k, r in enumerate(rows[::15])]
    pq.write_table(pa.Table.from_pylist(copies, schema=ROW_SCHEMA), folder / "zz-copies.parquet")
    return folder


def _curated(root) -> dict:
    tables = {split: pq.read_table(root / split / "data.parquet") for split in SPLITS}
    quarantine = pq.read_table(root / "report" / "quarantine.parquet").to_pylist()
    return {"splits": tables, "quarantine": sorted((r["id"], r["reason"], r["detail"]) for r in quarantine)}


def test_any_number_of_scan_parts_and_processes_gives_the_same_corpus(raw, tmp_path):
    one = curate(raw, {n: tmp_path / "one" / n for n in (*SPLITS, "report")},
                 CurateConfig(**{**CFG.__dict__, "scan_tasks": 1}), validate=False)
    assert plan_parts(raw, CurateConfig(scan_tasks=3)) == [0, 1, 2]
    three = curate(raw, {n: tmp_path / "three" / n for n in (*SPLITS, "report")},
                   CurateConfig(**{**CFG.__dict__, "scan_tasks": 3}), validate=False, workers=2)
    assert one == three and one["quarantined_rows"] > 0 and {"exact_duplicate", "contaminated_image"} <= set(one["quarantine_reasons"])
    a, b = _curated(tmp_path / "one"), _curated(tmp_path / "three")
    assert a["quarantine"] == b["quarantine"]
    for split in SPLITS:
        assert a["splits"][split].equals(b["splits"][split]), split
    assert not (tmp_path / "three" / "report" / ".work").exists()


def test_scan_outputs_that_miss_a_shard_fail_naming_it(raw, tmp_path):
    files = shard_files(raw)
    scan_part(files, 0, 2, tmp_path / "part-0", CFG)  # part 1 never ran
    with pytest.raises(CurationError, match=rf"no scan output for shard\(s\) {files[1].name}"):
        curate(raw, {n: tmp_path / "out" / n for n in (*SPLITS, "report")}, CFG, keys_dirs=[tmp_path / "part-0"])


def test_a_scan_is_keyed_on_the_curate_config_and_the_data_not_the_whole_lineage(raw):
    """The scan tasks' KFP cache key is their plan item: a later stage's config change reuses the
    scans; a curate change or other data does not."""
    from model_src.config import load_config
    from model_src.lineage import Lineage
    from model_src.stages import curate as stage

    def items(*overrides: str, data_hash: str = "h1") -> list[dict]:
        config_json = load_config("tiny", ["curate.scan_tasks=2", *overrides]).to_json()
        lineage = Lineage.make(config_json=config_json, git_commit="c", data_hash=data_hash, data_rev="r", image="i")
        return stage.plan(lineage=lineage.to_json(), data_dir=str(raw))

    base = items()
    assert [(i["part"], i["parts"]) for i in base] == [(0, 2), (1, 2)]
    assert items("sft.lr=0.5") == base
    assert items("curate.near_dup_hamming=4") != base
    assert items(data_hash="h2") != base
