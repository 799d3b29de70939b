"""The generator is deterministic, pinned and self-consistent; curation quarantines bad rows with
their reasons, drops duplicates and eval leaks, and reconciles every count."""

from __future__ import annotations

import io
import json
import subprocess
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from model_src.config import CurateConfig
from model_src.data.curate import CurationError, assign_split, check_row, curate, recaption
from model_src.data.schema import read_split
from model_src.data.domains import DOMAINS
from model_src.data.domains.common import png_bytes
from model_src.data.generate import GeneratorConfig, generate_corpus
from model_src.data.quality import GateError
from model_src.data.schema import ROW_SCHEMA, SPLITS, format_response, reward_domain
from model_src.lineage import dvc_dir_hash, dvc_pin
from model_src.rewards import score
from tests.conftest import ROOT, THINKPIPE

SMALL = GeneratorConfig().scaled(0.1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    generate_corpus(folder, SMALL)
    rows = [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return folder, rows


def _outputs(root):
    return {name: root / name for name in (*SPLITS, "report")}


def test_generator_is_byte_identical_for_a_seed(corpus, tmp_path):
    folder, _ = corpus
    generate_corpus(tmp_path / "again", SMALL)
    names = sorted(p.name for p in folder.glob("*.parquet"))
    assert names == sorted(f"{d}-{s}.parquet" for d in DOMAINS for s in ("train", "eval"))
    for name in names:
        assert (folder / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    generate_corpus(tmp_path / "other", GeneratorConfig(seed=99).scaled(0.1))
    assert (folder / "ocr-train.parquet").read_bytes() != (tmp_path / "other" / "ocr-train.parquet").read_bytes()


def test_every_generated_row_is_valid_and_its_own_answer_scores_one(corpus):
    """The generator's reasoning, in the exact SFT format, earns reward 1 from the domain verifier."""
    _, rows = corpus
    assert {r["domain"] for r in rows} == set(DOMAINS)
    for row in rows:
        problem, images, kept = check_row(row)
        assert problem is None, (row["id"], problem)
        assert len(images) == len(row["images"]) and kept == row["images"]  # nothing to convert
        response = format_response(row["reasoning"], row["answer"])
        result = score(reward_domain(row), response, row["answer"], question=row["question"])
        assert result.reward == 1.0 and result.format_ok, (row["id"], result)
        assert recaption(row)  # every row's metadata rebuilds a factual caption


def test_eval_rows_use_disjoint_seeds_and_digits(corpus):
    _, rows = corpus
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    assert evals and train and not {r["id"] for r in train} & {r["id"] for r in evals}
    digit_index = lambda r: set(json.loads(r["meta"])["indices"])  # noqa: E731
    train_digits = set().union(*(digit_index(r) for r in train if r["domain"] == "digits"))
    eval_digits = set().union(*(digit_index(r) for r in evals if r["domain"] == "digits"))
    assert train_digits and eval_digits and not train_digits & eval_digits


def test_digits_are_sklearns_real_handwritten_digits(corpus):
    from sklearn.datasets import load_digits

    _, rows = corpus
    digits = load_digits()
    recognition = [r for r in rows if r["task"] == "digit_recognition"]
    for row in recognition[:10]:
        assert row["answer"] == str(digits.target[int(row["source"].split("#")[1])])


def test_domains_have_their_documented_shapes(corpus):
    _, rows = corpus
    by_task = {}
    for row in rows:
        by_task.setdefault(row["task"], row)
    video = next(r for r in rows if r["domain"] == "video")
    assert len(video["frame_times"]) == len(video["images"]) >= 4
    box = json.loads(by_task["locate_object"]["answer"])
    assert len(box) == 4 and all(0 <= v <= 999 for v in box) and box[0] <= box[2]
    assert json.loads(by_task["action_click"]["answer"])["action"] == "click"
    mc = next(r for r in rows if r["answer_type"] == "choice")
    open_twin = next(r for r in rows if r["id"] == mc["id"].removesuffix("-mc"))
    assert mc["images"] == open_twin["images"] and mc["answer"] in "ABCD"
    assert "(" + mc["answer"] + ") " + open_twin["answer"] in mc["question"]  # the letter names the open answer
    assert {r["answer_type"] for r in rows if r["task"] == "peak_year"} == {"year"}


def test_committed_pin_matches_the_regenerated_corpus(tmp_path):
    """`make data` regenerates when the remote is empty: the result must hash to data.dvc's pin."""
    proc = subprocess.run([*THINKPIPE, "data", "--out", str(tmp_path / "raw"), "--check-pin", str(ROOT / "data.dvc")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    pinned, _ = dvc_pin(ROOT)
    assert dvc_dir_hash(tmp_path / "raw") == pinned


# --------------------------------------------------------------------------- curation of bad input
def _write_rows(folder, rows, name="rows.parquet"):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), folder / name)


def _image(i: int, mode: str = "RGB") -> bytes:
    """A distinct image per i (a drawn digit string), so only deliberate copies are duplicates."""
    from PIL import ImageDraw

    image = Image.new("RGB", (96, 48), (255, 255, 255))
    ImageDraw.Draw(image).text((4, 10), f"{i * 7919 % 100000:05d}", fill=(0, 0, 0))
    return png_bytes(image.convert(mode))


def _row(i, **changes) -> dict:
    row = {"id": f"r{i}", "domain": "stem", "task": "arithmetic", "split": "train", "images": [_image(i)],
           "frame_times": [], "question": f"What is {i} + 1?", "answer": str(i + 1), "answer_type": "integer",
           "difficulty": 0.2, "source": "test", "caption": "c", "reasoning": f"{i} plus 1 is {i + 1}.",
           "meta": json.dumps({"expression": f"{i} + 1"})}
    row.update(changes)
    return row


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims another size, with a valid header CRC."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR width/height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def _float_tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("F", (32, 32), 0.5).save(buf, format="TIFF")
    return buf.getvalue()


BAD_ROWS = {
    "image_corrupt": dict(images=[b"not a png"]),
    "image_empty": dict(images=[b""]),
    "image_too_many_pixels": dict(images=[_png_claiming(100_000, 100_000)]),
    "image_zero_size": dict(images=[_png_claiming(0, 56)]),
    "image_mode": dict(images=[_float_tiff()]),  # 32-bit float pixels: no safe 8-bit reading
    "image_too_small": dict(images=[png_bytes(Image.new("RGB", (40, 3)))]),
    "text_control_chars": dict(question="What is\x00 1 + 1?"),
    "frame_times_invalid": dict(frame_times=[float("nan")]),
    "image_aspect_ratio": dict(images=[png_bytes(Image.new("RGB", (4000, 10)))]),
    "image_missing": dict(images=[]),
    "answer_missing": dict(answer=""),
    "question_missing": dict(question="   "),
    "box_out_of_range": dict(answer="[10,20,1000,40]", answer_type="box"),
    "answer_malformed": dict(answer="eleven", answer_type="integer"),
    "difficulty_out_of_range": dict(difficulty=1.5),
    "domain_unknown": dict(domain="astrology"),
    "frame_times_mismatch": dict(frame_times=[0.0, 1.0]),
    "meta_invalid": dict(meta="{not json"),
}


def _non_utf8(table: pa.Table, row: int, column: str) -> pa.Table:
    """Replace one string value with invalid UTF-8 bytes (pyarrow does not validate on write)."""
    values = table.column(column).to_pylist()
    raw = [v.encode() for v in values]
    raw[row] = b"caf\xe9 \xff"
    return table.set_column(table.schema.get_field_index(column), column,
                            pa.array(raw, type=pa.binary()).view(pa.string()))


def test_bad_rows_land_in_quarantine_with_their_reason_and_counts_reconcile(tmp_path):
    good = [_row(i) for i in range(60)]
    bad = [_row(100 + k, **change) for k, change in enumerate(BAD_ROWS.values())]
    truncated = _row(200, images=[_image(3)[:60]])
    swapped = _row(202, answer="[50,20,10,40]", answer_type="box")
    duplicate_id = _row(5, question="another question?", images=[_image(999)])
    rows = good + bad + [truncated, swapped, duplicate_id, _row(203)]
    table = _non_utf8(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), len(rows) - 1, "question")
    (tmp_path / "raw").mkdir()
    pq.write_table(table, tmp_path / "raw" / "rows.parquet")

    report = curate(tmp_path / "raw", _outputs(tmp_path / "out"), CurateConfig(max_quarantine_share=1.0))
    expected = {reason: 1 for reason in BAD_ROWS}
    expected["image_corrupt"] += 1  # the truncated file
    expected["box_out_of_range"] += 1
    expected.update(duplicate_id=1, text_not_utf8=1)
    assert report["quarantine_reasons"] == expected
    assert report["input_rows"] == len(rows) == report["kept_rows"] + report["quarantined_rows"]
    assert report["kept_rows"] == 60
    quarantine = pq.read_table(tmp_path / "out" / "report" / "quarantine.parquet").to_pylist()
    by_id = {r["id"]: r for r in quarantine}
    assert by_id["r203"]["detail"] == "question" and "\\xe9" in by_id["r203"]["question"]  # kept, escaped
    assert by_id["r202"]["detail"] == "answer: x2 < x1 or y2 < y1"
    assert by_id["r5"]["images"] == [_image(999)]  # quarantined rows keep their content
    kept_ids = [r["id"] for split in SPLITS for r in read_split(tmp_path / "out" / split)]
    assert len(kept_ids) == len(set(kept_ids)) == 60  # splits are disjoint and lose nothing
    kept = pq.read_table(tmp_path / "out" / "report" / "kept.parquet").column("id").to_pylist()
    assert sorted(kept) == sorted(kept_ids)


@pytest.mark.parametrize("broken", ["missing", "mistyped"])
def test_missing_or_mistyped_column_fails_naming_file_and_column(tmp_path, broken):
    table = pa.Table.from_pylist([_row(1)], schema=ROW_SCHEMA)
    if broken == "missing":
        table, match = table.drop(["answer"]), r"x\.parquet: missing column 'answer'"
    else:
        index = table.schema.get_field_index("difficulty")
        table, match = table.set_column(index, "difficulty", pa.array(["high"])), r"x\.parquet: column 'difficulty'"
    (tmp_path / "raw").mkdir()
    pq.write_table(table, tmp_path / "raw" / "x.parquet")
    _write_rows(tmp_path / "raw", [_row(2)], name="a_good.parquet")
    with pytest.raises(CurationError, match=match):
        curate(tmp_path / "raw", _outputs(tmp_path / "out"), CurateConfig())
    assert not (tmp_path / "out").exists()  # fails before writing anything
    proc = subprocess.run([*THINKPIPE, "curate", "--input", str(tmp_path / "raw"), "--output", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "x.parquet" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------- duplicates and leakage
def _recompressed(data: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, format="PNG", compress_level=1)
    assert buf.getvalue() != data
    return buf.getvalue()


def test_exact_and_near_duplicates_and_eval_leaks_are_quarantined(tmp_path):
    evals = [_row(i, split="eval", id=f"e{i}") for i in range(10)]
    train = [_row(i) for i in range(10, 40)]
    train += [
        _row(10, id="exact"),  # same image, question, answer as r10
        _row(11, id="near", images=[_recompressed(_image(11))]),  # same pixels, other bytes
        _row(12, id="other-question", question="Is this a number?", answer="yes", answer_type="text"),  # kept
        _row(0, id="leak-image", question="Read the number.", answer="1"),  # e0's image bytes
        _row(1, id="leak-near", images=[_recompressed(_image(1))], question="Q?"),  # e1's pixels, same answer
        _row(50, id="leak-question", question="What is 2 + 1?", answer="3"),  # e2's specific question
        _row(51, id="template", question="Which digit is this?", answer="7"),
    ]
    evals += [_row(300 + k, split="eval", id=f"t{k}", question="Which digit is this?", answer="7")
              for k in range(3)]  # a template question: three eval rows share it
    _write_rows(tmp_path / "raw", evals + train)
    report = curate(tmp_path / "raw", _outputs(tmp_path / "out"), CurateConfig(max_quarantine_share=1.0))
    quarantine = {r["id"]: (r["reason"], r["detail"])
                  for r in pq.read_table(tmp_path / "out" / "report" / "quarantine.parquet").to_pylist()}
    assert quarantine == {
        "exact": ("exact_duplicate", "duplicate of r10"),
        "near": ("near_duplicate", "near duplicate of r11"),
        "leak-image": ("contaminated_image", "image matches eval row e0"),
        "leak-near": ("contaminated_image", "image matches eval row e1"),
        "leak-question": ("contaminated_question", "question and answer of eval row e2"),
    }
    assert report["split_rows"]["eval"] == 13
    assert report["input_rows"] == report["kept_rows"] + report["quarantined_rows"]


def test_split_is_stable_per_row_id_and_follows_the_fractions():
    cfg = CurateConfig()
    shares = [assign_split(f"row-{i}", cfg) for i in range(4000)]
    assert shares == [assign_split(f"row-{i}", cfg) for i in range(4000)]
    assert shares.count("rl") / 4000 == pytest.approx(cfg.rl_fraction, abs=0.03)
    assert shares.count("sft") / 4000 == pytest.approx(cfg.sft_fraction, abs=0.03)


# ------------------------------------------------------------- recaptioning, balance and the gate
@pytest.fixture(scope="module")
def curated(corpus, tmp_path_factory):
    folder, _ = corpus
    out = tmp_path_factory.mktemp("curated")
    report = curate(folder, _outputs(out), CurateConfig(recaption_ratio=0.5))
    return out, report


def test_curated_corpus_reconciles_per_domain_and_passes_the_gate(curated):
    out, report = curated
    assert report["input_rows"] == report["kept_rows"] + report["quarantined_rows"]
    for domain, n in report["input_by_domain"].items():
        assert n == report["kept_by_domain"].get(domain, 0) + report["quarantined_by_domain"].get(domain, 0)
    assert set(report["kept_by_domain"]) == set(DOMAINS)
    assert report["quality"]["failures"] == [] and all(s["success"] for s in report["quality"]["suites"].values())
    assert (out / "report" / "data_docs" / "index.html").exists()
    assert {p.name for p in (out / "report" / "plots").iterdir()} == {"domain_mix.png", "lengths_difficulty.png"}


def test_pretrain_captions_are_recaptioned_at_the_configured_ratio(curated):
    out, report = curated
    rows = read_split(out / "pretrain")
    recaptioned = [r for r in rows if r["caption_source"] == "recaptioned"]
    assert len(recaptioned) == report["recaptioned_rows"]
    assert 0.35 < len(recaptioned) / len(rows) < 0.65
    assert all(r["caption"] == recaption(r) for r in recaptioned)
    assert all(r["caption_source"] == "original" for split in ("sft", "rl", "eval") for r in read_split(out / split))


def test_sample_weights_give_every_domain_the_same_mass(curated):
    out, _ = curated
    rows = read_split(out / "sft")
    mass = {}
    for row in rows:
        mass[row["domain"]] = mass.get(row["domain"], 0.0) + row["sample_weight"]
    assert max(mass.values()) == pytest.approx(min(mass.values()), rel=1e-9)
    assert sum(r["sample_weight"] for r in rows) == pytest.approx(len(rows))


def test_the_data_mix_gives_a_weighted_domain_its_share_of_the_samples_drawn(tmp_path):
    """`curate.domain_weights.digits=3` with two other domains: digits get 3/5 of every split's
    mass, and the SFT sampler draws them about that often."""
    from model_src.train.supervised import index_stream

    generate_corpus(tmp_path / "raw", GeneratorConfig(rows={"stem": 24, "digits": 12, "video": 16}))
    curate(tmp_path / "raw", _outputs(tmp_path / "out"), CurateConfig(domain_weights={"digits": 3.0}),
           validate=False)
    for split in ("pretrain", "sft", "rl"):
        rows = read_split(tmp_path / "out" / split)
        mass = {d: sum(r["sample_weight"] for r in rows if r["domain"] == d) for d in ("stem", "digits", "video")}
        assert mass["digits"] == pytest.approx(3 * mass["stem"]) and mass["stem"] == pytest.approx(mass["video"])
        assert sum(mass.values()) == pytest.approx(len(rows))
    rows = read_split(tmp_path / "out" / "sft")
    stream = index_stream(len(rows), 0, [r["sample_weight"] for r in rows])
    drawn = [rows[next(stream)]["domain"] for _ in range(3000)]
    assert drawn.count("digits") / len(drawn) == pytest.approx(0.6, abs=0.04)


def test_gate_fails_when_a_domain_loses_too_many_rows(tmp_path):
    rows = [_row(i) for i in range(20)] + [_row(100 + i, domain="ocr", answer_type="text", answer="x",
                                                 images=[b"broken"]) for i in range(5)]
    rows += [_row(200 + i, domain="ocr", answer_type="text", answer="ok") for i in range(5)]
    _write_rows(tmp_path / "raw", rows)
    with pytest.raises(GateError, match=r"domain_mix: expect_column_values_to_be_between on column 'quarantine_share'"):
        curate(tmp_path / "raw", _outputs(tmp_path / "out"), CurateConfig(max_quarantine_share=0.25))
    # the reviewer still gets everything: quarantine, report and Data Docs
    report_dir = tmp_path / "out" / "report"
    assert pq.read_table(report_dir / "quarantine.parquet").num_rows == 5
    assert (report_dir / "data_docs" / "index.html").exists()


def test_gate_names_the_expectation_and_column_of_a_bad_kept_table(curated, tmp_path):
    from model_src.data.quality import validate_outputs

    out, report = curated
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    kept = pq.read_table(out / "report" / "kept.parquet")
    answers = kept.column("answer").to_pylist()
    first_box = kept.column("answer_type").to_pylist().index("box")
    answers[first_box] = "[1,2,3]"
    pq.write_table(kept.set_column(kept.schema.get_field_index("answer"), "answer", pa.array(answers)),
                   report_dir / "kept.parquet")
    (report_dir / "quarantine.parquet").write_bytes((out / "report" / "quarantine.parquet").read_bytes())
    with pytest.raises(GateError, match=r"kept: expect_column_values_to_match_regex on column 'answer' "
                                        r"\(answer_type==\"box\"\): 1 unexpected"):
        validate_outputs(report_dir, report, CurateConfig())


# ------------------------------------------------------------------- a corpus from outside
def _encoded(image: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def _photo(i: int) -> Image.Image:
    """A distinct 64 x 40 picture (wider than high, so a rotation shows)."""
    from PIL import ImageDraw

    image = Image.new("RGB", (64, 40), (200, 220, 240))
    ImageDraw.Draw(image).text((2, 12), f"{i * 7919 % 100000:05d}", fill=(20, 20, 20))
    return image


def _exif_rotated(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return _encoded(image, "JPEG", exif=exif.tobytes())


def _sixteen_bit(image: Image.Image) -> bytes:
    import numpy as np

    grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    return _encoded(Image.fromarray(grey), "PNG")


REAL_IMAGES = {  # how outside corpora store images, and what the kept row's image must become
    "jpeg": (lambda im: _encoded(im, "JPEG"), "as is"),
    "palette": (lambda im: _encoded(im.convert("P"), "PNG"), "as is"),
    "greyscale": (lambda im: _encoded(im.convert("L"), "PNG"), "as is"),
    "cmyk jpeg": (lambda im: _encoded(im.convert("CMYK"), "JPEG"), "converted"),
    "greyscale with alpha": (lambda im: _encoded(im.convert("LA"), "PNG"), "converted"),
    "16-bit greyscale": (_sixteen_bit, "converted"),
    "exif orientation": (_exif_rotated, "rotated"),
}


def test_a_corpus_from_outside_curates_without_crashing_and_converts_its_images(tmp_path):
    """Rows with a user's own `meta` (not a generator's facts), images as real corpora have them,
    and hostile rows: nothing crashes, every row is kept or quarantined with a reason, and the
    kept rows carry images training decodes faithfully."""
    rows = []
    for k, (name, (encode, _)) in enumerate(REAL_IMAGES.items()):
        rows.append(_row(k, id=f"img-{name}", images=[encode(_photo(k))],
                         meta=json.dumps({"license": "cc-by-4.0", "origin": {"url": "https://example.org"}})))
    rows += [_row(50 + i, meta=json.dumps({"user_field": i}), domain=domain, task="their_task")
             for i, domain in enumerate(["stem", "chart", "ocr", "counting", "digits"] * 4)]
    rows += [_row(90 + k, **change) for k, change in enumerate(
        [dict(question="Sum?\x1b[31m"), dict(frame_times=[float("inf")]), dict(images=[png_bytes(Image.new("RGB", (1, 1)))])])]
    _write_rows(tmp_path / "raw", rows)
    cfg = CurateConfig(max_quarantine_share=1.0, min_domain_share=0.0, recaption_ratio=1.0)
    report = curate(tmp_path / "raw", _outputs(tmp_path / "out"), cfg)
    assert report["input_rows"] == len(rows) == report["kept_rows"] + report["quarantined_rows"]
    assert report["quarantine_reasons"] == {"text_control_chars": 1, "frame_times_invalid": 1, "image_too_small": 1}
    kept = {r["id"]: r for split in SPLITS for r in read_split(tmp_path / "out" / split)}
    for k, (name, (encode, becomes)) in enumerate(REAL_IMAGES.items()):
        (data,) = kept[f"img-{name}"]["images"]
        image = Image.open(io.BytesIO(data))
        if becomes == "as is":
            assert data == encode(_photo(k)), name
        else:
            assert image.format == "PNG" and image.mode == "RGB", name
        assert image.size == ((40, 64) if becomes == "rotated" else (64, 40)), name
        if name == "16-bit greyscale":  # scaled to 8 bits, not clipped to white
            assert image.convert("L").getextrema()[0] < 60
    # no generator facts in `meta`: the caption stays the row's own, even at recaption_ratio 1
    pretrain = [r for r in kept.values() if r["stage_split"] == "pretrain"]
    assert pretrain and all(r["caption_source"] == "original" and r["caption"] == "c" for r in pretrain)


def test_a_users_own_domain_is_configuration_and_carries_its_verifier(tmp_path):
    from model_src.config import DomainConfig

    rows = [_row(i, domain="receipts", task="total" if i % 2 else "vendor", answer_type="text",
                 answer=f"shop {i}") for i in range(40)]
    rows += [_row(60 + i) for i in range(20)]  # built-in stem rows
    rows += [_row(90, domain="receipts", answer_type="integer"), _row(91, domain="invoices")]
    _write_rows(tmp_path / "raw", rows)
    cfg = CurateConfig(max_quarantine_share=1.0, min_domain_share=0.0,
                       domains={"receipts": DomainConfig(verifier="ocr", answer_type="text",
                                                         task_weights={"total": 3.0})})
    report = curate(tmp_path / "raw", _outputs(tmp_path / "out"), cfg)
    assert report["quarantine_reasons"] == {"answer_type_mismatch": 1, "domain_unknown": 1}
    quarantine = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "report" / "quarantine.parquet").to_pylist()}
    assert "curate.domains" in quarantine["r91"]["detail"]
    kept = [r for split in SPLITS for r in read_split(tmp_path / "out" / split)]
    assert {(r["domain"], r["verifier"]) for r in kept} == {("receipts", "ocr"), ("stem", "stem")}
    # the user's row is scored by its domain's verifier: OCR's edit similarity, not exact match
    receipt = next(r for r in kept if r["domain"] == "receipts")
    from model_src.data.schema import row_verifier
    assert score(row_verifier(receipt), format_response("r", receipt["answer"] + "x"), receipt["answer"]).reward > 0.8
    # task weights shift mass inside the domain: `total` gets 3/4 of the receipts' mass in every split
    for split in SPLITS:
        mass = {task: sum(r["sample_weight"] for r in kept if r["stage_split"] == split and r["task"] == task)
                for task in ("total", "vendor")}
        if all(mass.values()):
            assert mass["total"] == pytest.approx(3 * mass["vendor"])


def test_curation_lists_the_image_keys_a_model_trains_on_and_none_of_eval(curated):
    """report/train_keys.txt: the promotion gate leaves out today's eval prompts the champion saw."""
    import pyarrow.parquet as pq

    from model_src.data.curation.hashing import training_key
    from model_src.data.curation.writing import TRAIN_KEYS_FILE
    from model_src.data.schema import split_path

    out, report = curated
    listed = set((out / "report" / TRAIN_KEYS_FILE).read_text().split())
    keys = {split: {training_key(row["images"]) for row in pq.read_table(split_path(out / split)).to_pylist()}
            for split in SPLITS}
    assert listed == keys["pretrain"] | keys["sft"] | keys["rl"] and len(listed) > 0
    assert not listed & keys["eval"]  # curation removes eval leaks, so none of eval's images was trained on
