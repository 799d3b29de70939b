"""Bring your own data: every format `thinkpipe ingest` reads, written here by
model_src/data/ingest/samples.py (nothing downloaded), ingests with its quarantine reconciled;
mapping files fail naming the key; and one mixed corpus of all formats, in a domain of the user's
own, goes ingest -> `dvc add` -> the tiny DAG, through RLCS and evaluation."""

from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import pytest

from model_src.data.curate import check_row
from model_src.data.ingest import MappingError, ingest, load_mapping
from model_src.data.ingest import formats as ingest_formats
from model_src.data.ingest.samples import DOMAIN_CONFIG, write_samples
from model_src.data.schema import ROW_SCHEMA
from model_src.config import load_config
from tests.conftest import ROOT, THINKPIPE, TinyPipeline
from tests.s3_server import s3_server

# what each sample is built to quarantine (samples.py), by mapping
EXPECTED_QUARANTINE = {"hf": {}, "parquet": {"question_missing": 1}, "llava": {"image_unreadable": 1},
                       "wds": {}, "jsonl": {"record_malformed": 1}, "eval": {}}
ROWS = 40  # records per sample


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("byod")
    with s3_server("byod-images") as (env, _client):
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            mappings = write_samples(folder / "sources", ROWS, s3_images="s3://byod-images/samples")
            report = ingest(mappings, folder / "raw")  # the JSONL sample's images are read back from S3
    return folder, mappings, report


def test_every_format_ingests_and_counts_reconcile(samples):
    folder, mappings, report = samples
    assert set(report["mappings"]) == set(EXPECTED_QUARANTINE)
    for name, counts in report["mappings"].items():
        reasons = {k.split("/", 1)[1]: n for k, n in counts.items() if k.startswith("quarantined/")}
        assert reasons == EXPECTED_QUARANTINE[name], name
        assert counts["records"] == counts["rows"] + sum(reasons.values()), name
    assert report["records"] == report["rows"] + report["quarantined"] == 6 * ROWS + 1  # + the cut JSONL line
    quarantined = [json.loads(line) for line in (folder / "raw" / "ingest_quarantine.jsonl").read_text().splitlines()]
    assert len(quarantined) == report["quarantined"]
    missing = next(q for q in quarantined if q["reason"] == "image_unreadable")
    assert missing["record"] == "train.json[0]" and missing["content"]["image"] == "0.png"  # the record is kept
    rows = [r for shard in sorted((folder / "raw").glob("*.parquet")) for r in pq.read_table(shard).to_pylist()]
    assert len(rows) == report["rows"] and pq.read_schema(next((folder / "raw").glob("*.parquet"))) == ROW_SCHEMA
    assert len({r["id"] for r in rows}) == len(rows)
    cfg = load_config("tiny", [DOMAIN_CONFIG]).curate
    for row in rows:  # every ingested row passes curation's own checks
        problem, _, _ = check_row(row, cfg)
        assert problem is None, (row["id"], problem)
        assert row["domain"] == "shapes" and row["answer"].isdigit() and "<image>" not in row["question"]
        meta = json.loads(row["meta"])
        assert meta["licence"] == "cc0-1.0" and meta["record"] and row["source"].startswith("thinkpipe sample")
    assert {r["split"] for r in rows if r["id"].startswith("eval:")} == {"eval"}  # a held-out set of one's own
    assert json.loads(next(r for r in rows if r["id"].startswith("jsonl:"))["meta"])["annotator"] in (0, 1, 2)


@pytest.mark.parametrize(("change", "message"), [
    ({"colour": "blue"}, "unknown key"), ({"format": "csv"}, "format must be one of"),
    ({"fields": {"question": "q", "answer": "a"}}, "fields.images is missing"),
    ({"split": "test"}, "split must be train, eval"), ({"fields": {"question": "q", "answer": "a", "images": "i",
                                                                   "label": "x"}}, "not row fields"),
    ({"source": "nowhere/*.jsonl"}, "names no")])
def test_a_bad_mapping_fails_naming_the_file_and_key(tmp_path, change, message):
    import yaml

    body = {"format": "jsonl", "source": "items.jsonl", "domain": "shapes", "task": "t", "answer_type": "integer",
            "fields": {"question": "q", "answer": "a", "images": "i"}, **change}
    (tmp_path / "items.jsonl").write_text("{}\n")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(MappingError, match=message) as raised:
        ingest([load_mapping(path).path], tmp_path / "out")
    assert "bad.yaml" in str(raised.value)
    proc = subprocess.run([*THINKPIPE, "ingest", "--mapping", str(path), "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "bad.yaml" in proc.stderr, proc.stderr


def test_a_json_array_is_read_object_by_object(tmp_path, monkeypatch):
    """Records larger than the read buffer are read whole; a broken record stops the file naming it."""
    monkeypatch.setattr(ingest_formats, "CHUNK_CHARS", 64)
    records = [{"id": k, "text": "x" * (50 * k)} for k in range(6)]
    (tmp_path / "a.json").write_text(json.dumps(records))
    assert [r for _, r in ingest_formats._json_array(tmp_path / "a.json")] == records
    (tmp_path / "b.json").write_text(json.dumps(records)[:-40] + ", {broken")
    read = []
    with pytest.raises(MappingError, match=r"b\.json: broken JSON at record 5"):
        for _, record in ingest_formats._json_array(tmp_path / "b.json"):
            read.append(record)
    assert read == records[:5]


def test_a_mixed_corpus_of_every_format_trains_through_the_tiny_dag(samples, tmp_path):
    """ingest -> `dvc add` (real DVC) -> `thinkpipe run --data-pin`: a user's domain, scored by the
    counting verifier it names, through curation, RLCS and evaluation; the user's eval set is the
    held-out split."""
    import shutil

    folder, _, report = samples
    project = tmp_path / "project"
    shutil.copytree(folder / "raw", project / "raw")
    dvc = str(ROOT / ".venv" / "bin" / "dvc")
    for command in (["init", "--no-scm", "-q"], ["add", "raw", "-q"]):
        proc = subprocess.run([dvc, *command], cwd=project, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    pipeline = TinyPipeline(tmp_path / "state")
    result = pipeline.run("byod", "--data-dir", str(project / "raw"), "--data-pin", str(project / "raw.dvc"),
                          "--set", DOMAIN_CONFIG, "--set", "curate.scan_tasks=2")  # the scan fan-out, two wide
    assert result.returncode == 0, result.output[-5000:]
    stages = {run.data.tags["thinkpipe.stage"]: run for run in pipeline.runs_of("byod")[1]}
    curate = stages["curate"].data.metrics
    assert curate["input_rows"] == report["rows"] and curate["kept_rows"] + curate["quarantined_rows"] == report["rows"]
    assert len(list((tmp_path / "state" / "kfp").glob("*/for-loop-*-iteration-1"))) == 1  # two scan tasks ran
    assert "reward_mean/shapes" in stages["rlcs"].data.metrics  # rewarded in the user's domain
    evaluate = stages["evaluate"].data.metrics
    assert evaluate["num_samples"] > 0 and "accuracy/shapes" in evaluate
