"""Curation's passes, one module each; `model_src/data/curate.py` composes them.

    reading.py        the raw shards, schema-checked, streamed row by row
    checks.py         one row's structural checks (text, answer format, images)
    hashing.py        content and perceptual hashes, pigeonhole band keys
    scan.py           pass A, per shard (fans out): checks and the keys of every row
    join.py           pass B, global, DuckDB on disk: duplicate ids, near/exact duplicates, eval leaks
    splitting.py      the stage split by id hash; factual recaptioning
    balance.py        per-(domain, task) sampling weights
    ledger.py         the counts every row lands in, the quarantine table, the report
    writing.py        streaming parquet writers; the final split files and kept.parquet
"""
