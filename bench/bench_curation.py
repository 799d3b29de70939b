"""Curation throughput and peak memory at several sizes, side by side in one run, on corpora with
controlled duplication.

Goal (issue 19): linear time (rows/s about constant) and flat memory (peak RSS at the largest size
<= 1.2x the smallest). Each size is curated in its own child process so its peak RSS is its own:
each scan part in a fresh process, as each is its own pod in the DAG (`--workers N` runs N side by
side), then the curate stage's join (DuckDB on disk) and write in the bench's process, timed apart.
Peak RSS is the largest of any one task (a scan part, or the stage).

The corpora quarantine the same share at every size, so sizes compare like with like: every base
row is made distinct (its question carries the row's number, so no two base rows share a
question) and the eval rows are the same 500 at every size, then a fixed share is injected: `EXACT` exact copies of an earlier row (new id),
`NEAR` near copies (the same pixels re-encoded), `LEAKS` training rows that repeat an eval row's
image and answer. Corpora are generated once under bench/out/ and reused.

    .venv/bin/python bench/bench_curation.py [--sizes 10000 100000 500000] [--validate] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "curation"
EXACT, NEAR, LEAKS = 0.04, 0.03, 0.02  # injected shares of the training rows
EVAL_ROWS = 500  # the same held-out set at every size: natural leaks (a generated image close to an
                 # eval image with the same answer) then stay a fixed share of the training rows
SHARD_ROWS = 5000


def _reencoded(data: bytes) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def build_corpus(rows: int) -> Path:
    """`rows` raw rows: distinct base rows from many generator seeds, plus the injected copies."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from model_src.data.generate import GeneratorConfig, domain_rows
    from model_src.data.schema import ROW_SCHEMA

    folder = OUT / f"controlled-{rows}"
    if (folder / "DONE").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(rows)
    shard: list[dict] = []
    kept_train: list[dict] = []  # a bounded sample of earlier rows to copy from
    evals: list[dict] = []
    counts = {"base": 0, "eval": 0, "exact": 0, "near": 0, "leak": 0}
    written, seed, shards = 0, 0, 0

    def emit(row: dict) -> None:
        nonlocal written, shards, shard
        shard.append(row)
        written += 1
        if len(shard) == SHARD_ROWS:
            pq.write_table(pa.Table.from_pylist(shard, schema=ROW_SCHEMA), folder / f"{shards:05d}.parquet",
                           compression="zstd")
            shards, shard = shards + 1, []

    with tqdm(total=rows, desc=f"generate {rows}", unit="row") as bar:
        while written < rows:
            cfg = GeneratorConfig(seed=20_000 + seed)
            for domain in cfg.rows:
                for split in ("eval", "train"):
                    for row in domain_rows(cfg, domain, split):
                        if written >= rows:
                            break
                        if split == "eval" and counts["eval"] >= EVAL_ROWS:
                            continue
                        counts["eval"] += split == "eval"
                        row["id"] = f"s{seed}-{row['id']}"
                        row["question"] = f"{row['question']} (item {written})"  # no two base rows alike
                        emit(row)
                        counts["base"] += 1
                        bar.update(1)
                        (evals if split == "eval" else kept_train).append(row)
                        if len(kept_train) > 2000:
                            kept_train.pop(rng.randrange(len(kept_train)))
                        if len(evals) > 500:
                            evals.pop(rng.randrange(len(evals)))
                        if split != "train" or written >= rows:
                            continue
                        u = rng.random()
                        if u < EXACT:
                            copy, kind = dict(rng.choice(kept_train)), "exact"
                        elif u < EXACT + NEAR:
                            original = rng.choice(kept_train)
                            copy, kind = {**original, "images": [_reencoded(d) for d in original["images"]]}, "near"
                        elif u < EXACT + NEAR + LEAKS and evals:
                            leaked = rng.choice(evals)
                            copy, kind = {**leaked, "split": "train", "question": leaked["question"] + " again"}, "leak"
                        else:
                            continue
                        copy["id"] = f"{kind}-{written}"
                        emit(copy)
                        counts[kind] += 1
                        bar.update(1)
            seed += 1
    if shard:
        pq.write_table(pa.Table.from_pylist(shard, schema=ROW_SCHEMA), folder / f"{shards:05d}.parquet",
                       compression="zstd")
    (folder / "DONE").write_text(json.dumps(counts))
    return folder


CHILD = """
import json, multiprocessing, resource, sys, time
from concurrent.futures import ProcessPoolExecutor
from model_src.config import CurateConfig
from model_src.data.curate import curate, plan_parts, scan_part
from model_src.data.curation.reading import shard_files
from model_src.data.schema import SPLITS
src, dst, validate, workers = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
cfg = CurateConfig(max_quarantine_share=1.0)
started = time.monotonic()
files, parts = shard_files(src), plan_parts(src, cfg)
folders = [f"{dst}/keys/part-{p}" for p in parts]
# each scan part in a fresh process, as each is its own pod in the DAG; `workers` at a time
with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
    list(pool.map(scan_part, [files] * len(parts), parts, [len(parts)] * len(parts), folders, [cfg] * len(parts)))
scanned = time.monotonic()
report = curate(src, {n: f"{dst}/{n}" for n in (*SPLITS, "report")}, cfg, validate=validate, keys_dirs=folders)
rss = lambda who: resource.getrusage(who).ru_maxrss / 1024
print(json.dumps({"seconds": time.monotonic() - started, "scan_seconds": scanned - started,
                  "join_write_seconds": time.monotonic() - scanned, "rows": report["input_rows"], "parts": len(parts),
                  "kept": report["kept_rows"], "quarantined": report["quarantined_rows"],
                  "scan_task_peak_mb": rss(resource.RUSAGE_CHILDREN), "stage_peak_mb": rss(resource.RUSAGE_SELF),
                  "peak_rss_mb": max(rss(resource.RUSAGE_SELF), rss(resource.RUSAGE_CHILDREN))}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--corpus-only", action="store_true", help="generate the corpora, curate nothing")
    parser.add_argument("--validate", action="store_true", help="include the Great Expectations gate")
    parser.add_argument("--workers", type=int, default=1, help="scan processes side by side")
    args = parser.parse_args()
    results = []
    for rows in args.sizes:
        corpus = build_corpus(rows)
        if args.corpus_only:
            continue
        shutil.rmtree(OUT / f"curated-{rows}", ignore_errors=True)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(corpus), str(OUT / f"curated-{rows}"),
                               "1" if args.validate else "0", str(args.workers)], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["rows_per_s"] = result["rows"] / result["seconds"]
        result["injected"] = json.loads((corpus / "DONE").read_text())
        result["quarantined_share"] = result["quarantined"] / result["rows"]
        results.append(result)
        print(f"{result['rows']:>7} rows: {result['seconds']:7.1f} s (scan {result['scan_seconds']:.1f} s, join and "
              f"write {result['join_write_seconds']:.1f} s)  {result['rows_per_s']:6.0f} rows/s  "
              f"peak RSS {result['peak_rss_mb']:6.0f} MB (scan task {result['scan_task_peak_mb']:.0f}, stage "
              f"{result['stage_peak_mb']:.0f}; {result['parts']} parts)  (kept {result['kept']}, quarantined {result['quarantined']}, "
              f"{result['quarantined_share']:.1%}; injected {result['injected']})",
              flush=True)
    if len(results) >= 2:
        small, large = results[0], results[-1]
        print(f"rows ratio {large['rows'] / small['rows']:.1f}x  time ratio {large['seconds'] / small['seconds']:.2f}x  "
              f"throughput ratio {large['rows_per_s'] / small['rows_per_s']:.2f} (1.0 = linear)  "
              f"peak memory ratio {large['peak_rss_mb'] / small['peak_rss_mb']:.2f} (1.0 = flat)")
    (OUT / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"bench took {time.monotonic() - started:.0f} s")
