"""Curation: check every raw row, drop duplicates and eval leaks, recaption, balance, split.

Nothing is dropped silently: every input row ends in exactly one split or in the quarantine
table with a machine-readable `reason` (and a `detail`: the column at fault, or the id of the row
it duplicates), and `report.json` reconciles the counts (input = kept + quarantined, in total, per
reason and per domain). The corpus is streamed in batches of `batch_rows`: images are never held,
only ids and hashes (about 2.4 KB per row: bench/RESULTS.md), so memory grows slowly, not flat.

Passes:
0. count every question (one column only): a question shared by `template_min_rows` rows or
   more is a template ("which digit is this?") that cannot leak an answer by itself;
1. eval rows (the generator's `split == "eval"`): checked and deduplicated; their image hashes,
   perceptual hashes and specific questions become the contamination index;
2. every other row: checked, dropped when it leaks an eval row (contamination) or repeats an
   earlier row (exact or near duplicate), then split by id hash into rl / sft / pretrain;
   pretraining captions are rebuilt from the generator's facts at `recaption_ratio`;
3. the kept splits are rewritten with `sample_weight`, which gives every domain, and every task
   inside a domain, the same sampling mass (domain/concept-balanced resampling);
then Great Expectations validates the outputs and gates the stage (`model_src/data/quality.py`).

Quarantine reasons:
- file level (the stage fails, naming file and column): missing or mistyped column, no shards;
- `id_missing`, `duplicate_id`, `split_invalid`, `domain_unknown`, `text_not_utf8`,
  `<column>_missing`, `<column>_too_long`, `answer_type_unknown`, `answer_malformed`,
  `box_out_of_range`, `difficulty_out_of_range`, `meta_invalid`, `frame_times_mismatch`;
- `image_missing`, `image_empty`, `image_corrupt`, `image_zero_size`, `image_too_many_pixels`,
  `image_aspect_ratio`, `image_mode` (wrong channel count);
- `exact_duplicate` (same images, question and answer), `near_duplicate` (same question and
  answer, perceptual hash within `near_dup_hamming` bits);
- `contaminated_image`: the same image bytes as an eval row, or a near-identical image with the
  same answer; `contaminated_question`: a specific (non-template) question with the same answer
  as an eval row. A perceptual hash alone is too coarse for rendered screens and text (two
  different login forms hash alike), so near matches also need the same answer.

    thinkpipe curate --input data/raw --output /tmp/curated
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from model_src.config import CurateConfig
from model_src.data.schema import ANSWER_PATTERNS, DOMAINS, ROW_SCHEMA, SPLITS, split_path

TEXT_COLUMNS = tuple(f.name for f in ROW_SCHEMA if f.type == pa.string())
REQUIRED_TEXT = ("question", "answer", "domain", "task", "answer_type")
CURATED_SCHEMA = (ROW_SCHEMA.append(pa.field("stage_split", pa.string()))
                  .append(pa.field("caption_source", pa.string()))
                  .append(pa.field("sample_weight", pa.float64())))
QUARANTINE_SCHEMA = ROW_SCHEMA.append(pa.field("reason", pa.string())).append(pa.field("detail", pa.string()))
_ANSWER_RE = {kind: re.compile(pattern) for kind, pattern in ANSWER_PATTERNS.items()}


class CurationError(ValueError):
    """The input cannot be curated at all (no shards, a missing or mistyped column)."""


# ------------------------------------------------------------------------------------ reading
def shard_files(input_path: str | Path) -> list[Path]:
    """The parquet shards of a raw corpus (a folder of `*.parquet`, or one file), schema-checked
    up front so a bad file fails before any output is written."""
    path = Path(input_path)
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    if not files:
        raise CurationError(f"no *.parquet shards in {path}")
    for file in files:
        try:
            schema = pq.read_schema(file)
        except Exception as exc:  # noqa: BLE001 - any unreadable footer
            raise CurationError(f"{file}: not a readable parquet file ({exc})") from exc
        for field in ROW_SCHEMA:
            if field.name not in schema.names:
                raise CurationError(f"{file}: missing column '{field.name}' (expected {field.type})")
            got = schema.field(field.name).type
            if got != field.type and not (field.type == pa.string() and got == pa.large_string()):
                raise CurationError(f"{file}: column '{field.name}' has type {got}, expected {field.type}")
    return files


def _as_bytes(column: pa.Array) -> pa.Array:
    """A string column viewed as raw bytes (no UTF-8 validation), large or not."""
    return column.view(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())


def iter_rows(files: list[Path], batch_rows: int, eval_rows: bool) -> Iterator[dict]:
    """The rows of every shard whose `split` is "eval" (`eval_rows`) or anything else, `batch_rows`
    at a time; the other rows are filtered out in Arrow, before their images become Python bytes.
    Text columns are decoded here so a non-UTF-8 value marks its row (`_bad_utf8` = column)
    instead of failing the batch; the value is kept backslash-escaped, so nothing is lost."""
    import pyarrow.compute as pc

    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows, columns=list(ROW_SCHEMA.names)):
            is_eval = pc.fill_null(pc.equal(_as_bytes(batch.column("split")), pa.scalar(b"eval")), False)
            batch = batch.filter(is_eval if eval_rows else pc.invert(is_eval))
            columns = {}
            for name in ROW_SCHEMA.names:
                column = batch.column(name)
                columns[name] = _as_bytes(column).to_pylist() if name in TEXT_COLUMNS else column.to_pylist()
            for i in range(batch.num_rows):
                row = {"_bad_utf8": None}
                for name in ROW_SCHEMA.names:
                    value = columns[name][i]
                    if name in TEXT_COLUMNS and value is not None:
                        try:
                            value = value.decode("utf-8")
                        except UnicodeDecodeError:
                            value = value.decode("utf-8", errors="backslashreplace")
                            row["_bad_utf8"] = row["_bad_utf8"] or name
                    row[name] = value
                yield row


# ----------------------------------------------------------------------------------- checking
def check_image(data: bytes | None, cfg: CurateConfig = CurateConfig()) -> tuple[str | None, Image.Image | None]:
    """(None, decoded RGB image) for a sane image, else (quarantine reason, None). Size, pixel
    count and aspect ratio are read from the header before any pixel is decoded."""
    if not data:
        return "image_empty", None
    # Pillow refuses a PNG whose header says 0 pixels wide or high; read the header ourselves so
    # the reason says what is wrong
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and (
            int.from_bytes(data[16:20], "big") == 0 or int.from_bytes(data[20:24], "big") == 0):
        return "image_zero_size", None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width == 0 or height == 0:
                    return "image_zero_size", None
                if width * height > cfg.max_image_pixels:
                    return "image_too_many_pixels", None
                if max(width, height) / min(width, height) > cfg.max_aspect_ratio:
                    return "image_aspect_ratio", None
                if probe.mode not in ("RGB", "L", "RGBA", "P"):
                    return "image_mode", None
                probe.load()
                return None, probe.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "image_too_many_pixels", None
    except Exception:  # noqa: BLE001 - any decode failure is a corrupt image
        return "image_corrupt", None


def check_answer(answer: str, answer_type: str) -> tuple[str, str] | None:
    """None when the answer has its type's form, else (reason, detail).

    >>> check_answer("[10,20,30,40]", "box") is None
    True
    >>> check_answer("[30,20,10,40]", "box")
    ('box_out_of_range', 'answer: x2 < x1 or y2 < y1')
    >>> check_answer("12a", "integer")
    ('answer_malformed', 'answer: not a integer')
    """
    pattern = _ANSWER_RE.get(answer_type)
    if pattern is None:
        return "answer_type_unknown", f"answer_type: {answer_type!r}"
    if not pattern.match(answer):
        return "answer_malformed", f"answer: not a {answer_type}"
    box = None
    if answer_type == "box":
        box = json.loads(answer)
    elif answer_type == "action":
        try:
            action = json.loads(answer)
        except ValueError:
            return "answer_malformed", "answer: action is not JSON"
        box = action.get("box") if isinstance(action, dict) else None
        if action.get("action") in ("click", "type") and box is None:
            return "answer_malformed", "answer: click/type action without a box"
    if box is not None:
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box)):
            return "answer_malformed", "answer: box is not 4 integers"
        if not all(0 <= v <= 999 for v in box):
            return "box_out_of_range", "answer: box value outside 0-999"
        if box[2] < box[0] or box[3] < box[1]:
            return "box_out_of_range", "answer: x2 < x1 or y2 < y1"
    return None


def check_row(row: dict, cfg: CurateConfig = CurateConfig()) -> tuple[tuple[str, str] | None, list[Image.Image]]:
    """((reason, detail) or None, decoded images)."""
    if not row.get("id"):
        return ("id_missing", "id"), []
    if row.get("_bad_utf8"):
        return ("text_not_utf8", row["_bad_utf8"]), []
    for column in REQUIRED_TEXT:
        value = row[column]
        if value is None or not value.strip():
            return (f"{column}_missing", column), []
    for column in TEXT_COLUMNS:
        if row[column] is not None and len(row[column]) > cfg.max_text_chars:
            return (f"{column}_too_long", f"{column}: {len(row[column])} chars > {cfg.max_text_chars}"), []
    if row["split"] not in ("train", "eval"):
        return ("split_invalid", f"split: {row['split']!r}"), []
    if row["domain"] not in DOMAINS:
        return ("domain_unknown", f"domain: {row['domain']!r}"), []
    problem = check_answer(row["answer"], row["answer_type"])
    if problem:
        return problem, []
    if row["difficulty"] is None or not 0.0 <= row["difficulty"] <= 1.0:
        return ("difficulty_out_of_range", f"difficulty: {row['difficulty']}"), []
    try:
        if not isinstance(json.loads(row["meta"] or "{}"), dict):
            raise ValueError
    except ValueError:
        return ("meta_invalid", "meta: not a JSON object"), []
    if not row["images"]:
        return ("image_missing", "images"), []
    frame_times = row["frame_times"] or []
    if frame_times and (len(frame_times) != len(row["images"]) or any(b <= a for a, b in zip(frame_times, frame_times[1:]))):
        return ("frame_times_mismatch", "frame_times: one increasing time per frame"), []
    decoded = []
    for k, data in enumerate(row["images"]):
        reason, image = check_image(data, cfg)
        if reason:
            return (reason, f"images[{k}]"), []
        decoded.append(image)
    return None, decoded


# ------------------------------------------------------------------------------------ hashing
def normalize_text(text: str) -> str:
    return " ".join(text.lower().split())


def content_hash(images: list[bytes]) -> str:
    digest = hashlib.sha256()
    for data in images:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


PHASH_BITS = 256


def row_phash(images: list[Image.Image]) -> int:
    """256-bit perceptual hash (imagehash's DCT pHash, 16x16) of a row's images side by side.

    The 64-bit default cannot tell "3 + 4" from "5 + 2" (measured: 2-4 bits apart, the same as
    a re-render); at 256 bits re-renders stay at 0 and different expressions are >= 30 apart.
    """
    import imagehash

    tiles = [image.convert("L").resize((64, 64), Image.Resampling.BILINEAR) for image in images]
    strip = Image.new("L", (64 * len(tiles), 64))
    for k, tile in enumerate(tiles):
        strip.paste(tile, (64 * k, 0))
    return int(str(imagehash.phash(strip, hash_size=16)), 16)


class NearDupIndex:
    """Earlier entries whose hash is within `max_bits` bits of a query, under a grouping key.

    Pigeonhole: split the hash into `max_bits + 1` bands; two hashes that differ in at most
    `max_bits` bits agree exactly on at least one band, so only rows sharing a band are compared.

    >>> index = NearDupIndex(max_bits=2)
    >>> index.add("q", 0b1011, "first")
    >>> index.find("q", 0b1000), index.find("q", 0b0100), index.find("other", 0b1011)
    ('first', None, None)
    """

    def __init__(self, max_bits: int, bits: int = PHASH_BITS):
        self.max_bits = max_bits
        bands = max_bits + 1
        edges = [round(bits * k / bands) for k in range(bands + 1)]
        self.masks = [(((1 << (hi - lo)) - 1) << lo) for lo, hi in zip(edges, edges[1:])]
        # compact on purpose (this index is most of curation's memory): one int slot per band,
        # pointing at entry numbers; a collision of slots is harmless, candidates are re-checked
        self.values: list[int] = []
        self.ids: list[str] = []
        self.table: dict[int, int | list[int]] = {}

    def _slots(self, key, value: int):
        return (hash((key, band, value & mask)) for band, mask in enumerate(self.masks))

    def find(self, key, value: int) -> str | None:
        for slot in self._slots(key, value):
            entry = self.table.get(slot)
            for i in (entry if isinstance(entry, list) else () if entry is None else (entry,)):
                if (value ^ self.values[i]).bit_count() <= self.max_bits:
                    return self.ids[i]
        return None

    def add(self, key, value: int, row_id: str) -> None:
        i = len(self.values)
        self.values.append(value)
        self.ids.append(row_id)
        for slot in self._slots(key, value):
            entry = self.table.get(slot)
            if entry is None:
                self.table[slot] = i
            elif isinstance(entry, list):
                entry.append(i)
            else:
                self.table[slot] = [entry, i]


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


# ---------------------------------------------------------------------------------- splitting
def _unit(*parts: str) -> float:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:8], "big") / 2**64


def assign_split(row_id: str, cfg: CurateConfig) -> str:
    """Deterministic stage split of a training row from its id's hash: RL, SFT, then pretraining."""
    u = _unit(row_id)
    if u < cfg.rl_fraction:
        return "rl"
    if u < cfg.rl_fraction + cfg.sft_fraction:
        return "sft"
    return "pretrain"


def recaption(row: dict) -> str:
    """The factual caption rebuilt from the generator's metadata (docs/recipe.md section 2)."""
    from model_src.data.domains import DOMAINS as GENERATORS

    return GENERATORS[row["domain"]].factual_caption(row["task"], json.loads(row["meta"]))


def balance_weights(counts: Counter) -> dict[tuple[str, str], float]:
    """Sampling weight per (domain, task) so each domain, and each task inside a domain, gets the
    same total mass; weights average 1 over the rows.

    >>> w = balance_weights(Counter({("stem", "a"): 30, ("stem", "b"): 10, ("ocr", "t"): 20}))
    >>> {k: round(v, 3) for k, v in w.items()}
    {('stem', 'a'): 0.5, ('stem', 'b'): 1.5, ('ocr', 't'): 1.5}
    """
    total = sum(counts.values())
    tasks_per_domain = Counter(domain for domain, _ in counts)
    return {(domain, task): total / (len(tasks_per_domain) * tasks_per_domain[domain] * n)
            for (domain, task), n in counts.items()}


# ------------------------------------------------------------------------------------ curating
class _Writers:
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
    writers = _Writers()
    quarantine_path = report_dir / "quarantine.parquet"
    counts = {"input": Counter(), "kept": Counter(), "quarantined": Counter(), "reasons": Counter(),
              "domain_reasons": defaultdict(Counter), "split": Counter(), "concepts": defaultdict(Counter),
              "recaptioned": 0}
    seen_ids: set[str] = set()
    seen_content: dict[bytes, str] = {}
    near = NearDupIndex(cfg.near_dup_hamming)
    eval_content: dict[str, str] = {}
    eval_near = NearDupIndex(cfg.near_dup_hamming)
    eval_answers: dict[tuple[str, str], str] = {}
    templates = template_questions(files, cfg)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    bar = tqdm(total=total, desc="curate", disable=not progress, unit="row")

    def quarantine(row: dict, reason: str, detail: str) -> None:
        domain = row.get("domain") or "<missing>"
        counts["quarantined"][domain] += 1
        counts["reasons"][reason] += 1
        counts["domain_reasons"][domain][reason] += 1
        writers.write(quarantine_path, {**row, "reason": reason, "detail": detail}, QUARANTINE_SCHEMA)

    def screen(row: dict) -> tuple[str, int] | None:
        """Common checks; returns (content hash, phash) of a good, new row, else quarantines it."""
        counts["input"][row.get("domain") or "<missing>"] += 1
        bar.update(1)
        problem, images = check_row(row, cfg)
        if problem is None and row["id"] in seen_ids:
            problem = ("duplicate_id", f"id: {row['id']}")
        if problem:
            quarantine(row, *problem)
            return None
        seen_ids.add(row["id"])
        return content_hash(row["images"]), row_phash(images)

    def dedup(row: dict, image_digest: str, phash: int) -> bool:
        key = (normalize_text(row["question"]), normalize_text(row["answer"]), len(row["images"]))
        digest = hashlib.sha256("\x00".join((image_digest, *key[:2])).encode()).digest()[:16]
        if digest in seen_content:
            quarantine(row, "exact_duplicate", f"duplicate of {seen_content[digest]}")
            return False
        twin = near.find(key, phash)
        if twin is not None:
            quarantine(row, "near_duplicate", f"near duplicate of {twin}")
            return False
        seen_content[digest] = row["id"]
        near.add(key, phash, row["id"])
        return True

    def keep(row: dict, split: str) -> None:
        counts["kept"][row["domain"]] += 1
        counts["split"][split] += 1
        counts["concepts"][split][(row["domain"], row["task"])] += 1
        writers.write(staging / f"{split}.parquet", {**row, "stage_split": split}, CURATED_SCHEMA)

    # pass 1: eval rows, which also build the contamination index
    for row in iter_rows(files, cfg.batch_rows, eval_rows=True):
        keys = screen(row)
        if keys and dedup(row, *keys):
            question, answer = normalize_text(row["question"]), normalize_text(row["answer"])
            eval_content.setdefault(keys[0], row["id"])
            eval_near.add(answer, keys[1], row["id"])
            if _question_key(question) not in templates:
                eval_answers.setdefault((question, answer), row["id"])
            keep({**row, "caption_source": "original"}, "eval")

    # pass 2: everything else
    for row in iter_rows(files, cfg.batch_rows, eval_rows=False):
        keys = screen(row)
        if keys is None:
            continue
        digest, phash = keys
        question, answer = normalize_text(row["question"]), normalize_text(row["answer"])
        leak = eval_content.get(digest) or eval_near.find(answer, phash)
        if leak:
            quarantine(row, "contaminated_image", f"image matches eval row {leak}")
            continue
        if (question, answer) in eval_answers:
            quarantine(row, "contaminated_question", f"question and answer of eval row {eval_answers[(question, answer)]}")
            continue
        if not dedup(row, digest, phash):
            continue
        split = assign_split(row["id"], cfg)
        source = "original"
        if split == "pretrain" and _unit(row["id"], "recaption") < cfg.recaption_ratio:
            row = {**row, "caption": recaption(row)}
            source = "recaptioned"
            counts["recaptioned"] += 1
        keep({**row, "caption_source": source}, split)
    bar.close()

    # pass 3: balance weights, final split files and kept.parquet
    writers.close(quarantine_path, QUARANTINE_SCHEMA)
    kept_path = report_dir / "kept.parquet"
    for split in SPLITS:
        writers.close(staging / f"{split}.parquet", CURATED_SCHEMA)
    for split in SPLITS:
        weights = balance_weights(counts["concepts"][split]) if counts["concepts"][split] else {}
        out_path = split_path(output_dirs[split])
        for batch in pq.ParquetFile(staging / f"{split}.parquet").iter_batches(batch_size=cfg.batch_rows):
            for row in batch.to_pylist():
                row["sample_weight"] = weights[(row["domain"], row["task"])]
                writers.write(out_path, row, CURATED_SCHEMA)
                writers.write(kept_path, row, CURATED_SCHEMA)
        writers.close(out_path, CURATED_SCHEMA)
        (staging / f"{split}.parquet").unlink()
    writers.close(kept_path, CURATED_SCHEMA)
    staging.rmdir()

    report = _report(counts)
    (report_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    if validate:
        from model_src.data.quality import validate_outputs

        report["quality"] = validate_outputs(report_dir, report, cfg)
        (report_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return report


def _report(counts: dict) -> dict:
    report = {
        "input_rows": sum(counts["input"].values()),
        "kept_rows": sum(counts["kept"].values()),
        "quarantined_rows": sum(counts["quarantined"].values()),
        "split_rows": {split: counts["split"][split] for split in SPLITS},
        "quarantine_reasons": dict(sorted(counts["reasons"].items())),
        "input_by_domain": dict(sorted(counts["input"].items())),
        "kept_by_domain": dict(sorted(counts["kept"].items())),
        "quarantined_by_domain": dict(sorted(counts["quarantined"].items())),
        "quarantine_reasons_by_domain": {d: dict(sorted(c.items())) for d, c in sorted(counts["domain_reasons"].items())},
        "split_by_domain": {split: _per_domain(counts["concepts"][split]) for split in SPLITS},
        "recaptioned_rows": counts["recaptioned"],
    }
    # the reconciliation the stage promises: every input row is accounted for, per domain too
    if report["input_rows"] != report["kept_rows"] + report["quarantined_rows"]:
        raise AssertionError(f"curation lost rows: {report}")
    for domain, n in report["input_by_domain"].items():
        if n != report["kept_by_domain"].get(domain, 0) + report["quarantined_by_domain"].get(domain, 0):
            raise AssertionError(f"curation lost rows of domain {domain}: {report}")
    return report


def _per_domain(concepts: Counter) -> dict[str, int]:
    per_domain: Counter = Counter()
    for (domain, _task), n in concepts.items():
        per_domain[domain] += n
    return dict(sorted(per_domain.items()))
