"""Pass B, once over the whole corpus: the keys of every shard joined on disk, in bounded memory.

Why DuckDB (on disk): the join is a few GROUP BYs and equi-joins over about 200 bytes of keys a row
(20 GB at 100M rows), which one DuckDB process does out of core under a fixed `memory_limit`,
spilling to a local folder; it is a pip wheel in the image, with no service to run. The work that
needs many cores (decoding images, hashing) fans out before it (scan.py). Ray Data on KubeRay or
Spark would spread the join too, but need an operator and a cluster per run for a step that is not
the bottleneck.

The greedy order of the in-memory curation is kept: eval rows first, then training rows, each in
shard order; a row is a duplicate only of an earlier row that was kept. So

1. `duplicate_id`: a sound row whose id an earlier sound row has;
2. eval rows deduplicated among themselves (exact, then near);
3. training rows that leak a kept eval row: the same image bytes, a near-identical image with the
   same answer (`contaminated_image`), or a specific (non-template) question with the same answer
   (`contaminated_question`). A question at least `template_min_rows` rows share is a template;
4. the remaining training rows deduplicated among themselves.

Steps 2 and 4 are greedy (a row dropped as a duplicate hides nothing): the candidate pairs, rows
sharing a dedup group and a pigeonhole band within `near_dup_hamming` bits, stream out of DuckDB in
order and one bit a row says which rows were kept. The result, `decisions.parquet`, names each row
this pass quarantines (file, row, reason, detail); every other sound row is kept.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from model_src.config import CurateConfig

DECISIONS_SCHEMA = pa.schema([("gid", pa.int64()), ("reason", pa.string()), ("detail", pa.string())])

_DISTANCE = " + ".join(f"CAST(bit_count(xor(x.p{k}, y.p{k})) AS INTEGER)" for k in range(4))


def _connect(work_dir: Path, cfg: CurateConfig):
    import duckdb

    con = duckdb.connect(str(work_dir / "join.duckdb"))
    con.execute(f"SET memory_limit = '{cfg.join_memory_mb}MB'")
    con.execute(f"SET temp_directory = '{work_dir / 'spill'}'")
    con.execute(f"SET threads = {cfg.join_threads or os.cpu_count() or 1}")
    con.execute("SET preserve_insertion_order = false")
    return con


def _pairs_sql(members: str, h: int) -> str:
    """Candidate (earlier a, later b) pairs among `members` (a query over `live`): the same dedup
    group, a shared band, within `h` bits; ordered as the greedy pass reads them."""
    return f"""
        WITH m AS ({members}),
             b AS (SELECT gid, ord, group_key, unnest(bands) AS band FROM m),
             shared AS (SELECT group_key, band FROM b GROUP BY ALL HAVING count(*) > 1),
             sb AS (SELECT b.* FROM b SEMI JOIN shared USING (group_key, band)),
             pairs AS (SELECT DISTINCT x.gid AS a, y.gid AS b FROM sb x JOIN sb y
                       ON x.group_key = y.group_key AND x.band = y.band AND x.ord < y.ord)
        SELECT y.gid AS b, x.gid AS a, x.id AS a_id, x.exact_key = y.exact_key AS exact
        FROM pairs p JOIN m x ON x.gid = p.a JOIN m y ON y.gid = p.b
        WHERE {_DISTANCE} <= {h}
        ORDER BY y.ord, x.ord"""


def _greedy(con, members: str, h: int, kept_bits: bytearray, out: pq.ParquetWriter) -> int:
    """Walk the candidate pairs in order: a row with an earlier kept candidate is an exact duplicate
    of the first with the same content, else a near duplicate of the first; it is then dropped, so
    later rows are compared only with kept ones. Returns the rows dropped."""
    dropped: list[tuple[int, str, str]] = []
    total = 0

    def decide(b: int, candidates: list[tuple[int, str, bool]]) -> None:
        kept = [(a_id, exact) for a, a_id, exact in candidates if kept_bits[a >> 3] >> (a & 7) & 1]
        if not kept:
            return
        kept_bits[b >> 3] &= ~(1 << (b & 7)) & 0xFF
        exact_twin = next((a_id for a_id, exact in kept if exact), None)
        dropped.append((b, "exact_duplicate", f"duplicate of {exact_twin}") if exact_twin is not None
                       else (b, "near_duplicate", f"near duplicate of {kept[0][0]}"))

    def flush() -> None:
        nonlocal total
        if dropped:
            out.write_table(pa.Table.from_pylist([dict(zip(DECISIONS_SCHEMA.names, d)) for d in dropped],
                                                 schema=DECISIONS_SCHEMA))
            total += len(dropped)
            dropped.clear()

    current, candidates = None, []
    reader = con.sql(_pairs_sql(members, h)).to_arrow_reader(65536)
    for batch in reader:
        columns = batch.to_pydict()
        for b, a, a_id, exact in zip(columns["b"], columns["a"], columns["a_id"], columns["exact"]):
            if b != current:
                if current is not None:
                    decide(current, candidates)
                current, candidates = b, []
            candidates.append((a, a_id, exact))
        if len(dropped) > 65536:
            flush()
    if current is not None:
        decide(current, candidates)
    flush()
    return total


def join_keys(keys_files: list[Path], out_path: str | Path, cfg: CurateConfig = CurateConfig(),
              work_dir: str | Path | None = None) -> dict[str, int]:
    """Write `out_path` (decisions.parquet: file_index, row_index, reason, detail, in shard order)
    from the keys files of every shard; returns the rows quarantined per reason. `work_dir` holds the
    database and its spill files while it runs (default: beside `out_path`), removed after."""
    out_path = Path(out_path)
    work_dir = Path(work_dir) if work_dir else out_path.parent / ".join"
    shutil.rmtree(work_dir, ignore_errors=True)
    (work_dir / "spill").mkdir(parents=True)
    h = cfg.near_dup_hamming
    try:
        con = _connect(work_dir, cfg)
        files = [str(f) for f in keys_files]
        # gid: a dense row number in shard order; ord: the greedy order (eval rows first)
        con.execute("""CREATE TABLE offsets AS SELECT file_index,
                         CAST(sum(count(*)) OVER (ORDER BY file_index) - count(*) AS BIGINT) AS offset
                       FROM read_parquet($files) GROUP BY file_index""", {"files": files})
        n = con.execute("SELECT count(*) FROM read_parquet($files)", {"files": files}).fetchone()[0]
        con.execute(f"""CREATE TABLE k AS SELECT o.offset + r.row_index AS gid,
                          o.offset + r.row_index + CASE WHEN r.is_eval THEN 0 ELSE {n} END AS ord,
                          r.* EXCLUDE (kept_images)
                        FROM read_parquet($files) r JOIN offsets o USING (file_index)""", {"files": files})
        con.execute("""CREATE TABLE templates AS SELECT question_key FROM k WHERE question_key IS NOT NULL
                       GROUP BY question_key HAVING count(*) >= $n""", {"n": cfg.template_min_rows})
        con.execute("""CREATE TABLE live AS SELECT * EXCLUDE (reason, detail, question_key),
                         question_key IN (SELECT question_key FROM templates) AS template,
                         row_number() OVER (PARTITION BY id ORDER BY ord) AS nth
                       FROM k WHERE reason IS NULL""")
        con.execute("CREATE TABLE decisions (gid BIGINT, reason VARCHAR, detail VARCHAR)")
        con.execute("""INSERT INTO decisions SELECT gid, 'duplicate_id', 'id: ' || id FROM live WHERE nth > 1""")
        con.execute("DELETE FROM live WHERE nth > 1")

        kept_bits = bytearray(b"\xff" * (n // 8 + 1))  # one bit a row: kept so far
        greedy_file = work_dir / "greedy.parquet"

        def dedup(split_filter: str) -> None:
            with pq.ParquetWriter(greedy_file, DECISIONS_SCHEMA) as writer:
                _greedy(con, f"SELECT * FROM live WHERE {split_filter}", h, kept_bits, writer)
            con.execute("INSERT INTO decisions SELECT * FROM read_parquet($f)", {"f": str(greedy_file)})

        dedup("is_eval")
        con.execute("""CREATE TABLE kept_eval AS SELECT * FROM live l
                       WHERE is_eval AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.gid = l.gid)""")
        con.execute(f"""
            INSERT INTO decisions
            WITH t AS (SELECT * FROM live WHERE NOT is_eval),
                 content AS (SELECT image_key, arg_min(id, ord) AS eval_id FROM kept_eval GROUP BY image_key),
                 eb AS (SELECT id, ord, answer_key, p0, p1, p2, p3, unnest(bands) AS band FROM kept_eval),
                 tb AS (SELECT gid, answer_key, p0, p1, p2, p3, unnest(bands) AS band FROM t),
                 near AS (SELECT y.gid, arg_min(x.id, x.ord) AS eval_id FROM tb y JOIN eb x USING (answer_key, band)
                          WHERE {_DISTANCE} <= {h} GROUP BY y.gid),
                 qa AS (SELECT qa_key, arg_min(id, ord) AS eval_id FROM kept_eval WHERE NOT template GROUP BY qa_key)
            SELECT t.gid,
                   CASE WHEN c.eval_id IS NOT NULL OR nr.eval_id IS NOT NULL THEN 'contaminated_image'
                        ELSE 'contaminated_question' END,
                   CASE WHEN c.eval_id IS NOT NULL OR nr.eval_id IS NOT NULL
                        THEN 'image matches eval row ' || coalesce(c.eval_id, nr.eval_id)
                        ELSE 'question and answer of eval row ' || q.eval_id END
            FROM t LEFT JOIN content c USING (image_key) LEFT JOIN near nr ON nr.gid = t.gid
                   LEFT JOIN qa q ON q.qa_key = t.qa_key AND NOT t.template
            WHERE c.eval_id IS NOT NULL OR nr.eval_id IS NOT NULL OR q.eval_id IS NOT NULL""")
        dedup("NOT is_eval AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.gid = live.gid)")
        counts = dict(con.execute("SELECT reason, count(*) FROM decisions GROUP BY reason ORDER BY reason").fetchall())
        con.execute("""COPY (SELECT k.file_index, k.row_index, d.reason, d.detail FROM decisions d JOIN k USING (gid)
                             ORDER BY k.file_index, k.row_index) TO $out (FORMAT parquet)""", {"out": str(out_path)})
        con.close()
        return counts
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
