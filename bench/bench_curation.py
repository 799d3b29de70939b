"""Curation throughput and peak memory at 10k and 100k rows, side by side in one run.

Goal: linear time (rows/s about constant, so time ratio ~ row ratio) and flat memory (peak RSS
about the same at both sizes: rows are streamed in batches, only hashes are kept).
Each size is curated in its own child process so its peak RSS is its own. The corpora are
generated once (distinct seeds, all eight domains) and kept under bench/out/ for re-runs.

    .venv/bin/python bench/bench_curation.py [--sizes 10000 100000] [--validate]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "curation"


def build_corpus(rows: int) -> Path:
    """`rows` raw rows: as many default-size corpora (about 2.7k rows each) as needed, each from
    its own seed, written as separate shards."""
    from model_src.data.generate import GeneratorConfig, domain_rows

    import pyarrow as pa
    import pyarrow.parquet as pq

    from model_src.data.schema import ROW_SCHEMA

    folder = OUT / f"raw-{rows}"
    if (folder / "DONE").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    written, seed = 0, 0
    from tqdm import tqdm

    with tqdm(total=rows, desc=f"generate {rows}", unit="row") as bar:
        while written < rows:
            cfg = GeneratorConfig(seed=10_000 + seed)
            for domain in cfg.rows:
                for split in ("train", "eval"):
                    batch = domain_rows(cfg, domain, split)[: rows - written]
                    if not batch:
                        continue
                    for row in batch:  # ids must stay unique across seeds
                        row["id"] = f"s{seed}-{row['id']}"
                    pq.write_table(pa.Table.from_pylist(batch, schema=ROW_SCHEMA),
                                   folder / f"s{seed:03d}-{domain}-{split}.parquet", compression="zstd")
                    written += len(batch)
                    bar.update(len(batch))
            seed += 1
    (folder / "DONE").write_text(str(written))
    return folder


CHILD = """
import json, resource, sys, time
from model_src.config import CurateConfig
from model_src.data.curate import curate
from model_src.data.schema import SPLITS
src, dst, validate = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
started = time.monotonic()
report = curate(src, {n: f"{dst}/{n}" for n in (*SPLITS, "report")}, CurateConfig(max_quarantine_share=1.0),
                validate=validate)
print(json.dumps({"seconds": time.monotonic() - started, "rows": report["input_rows"],
                  "kept": report["kept_rows"], "quarantined": report["quarantined_rows"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--validate", action="store_true", help="include the Great Expectations gate")
    args = parser.parse_args()
    results = []
    for rows in args.sizes:
        corpus = build_corpus(rows)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(corpus), str(OUT / f"curated-{rows}"),
                               "1" if args.validate else "0"], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["rows_per_s"] = result["rows"] / result["seconds"]
        results.append(result)
        print(f"{result['rows']:>7} rows: {result['seconds']:7.1f} s  {result['rows_per_s']:6.0f} rows/s  "
              f"peak RSS {result['peak_rss_mb']:6.0f} MB  (kept {result['kept']}, quarantined {result['quarantined']})",
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
