"""Curation's passes, one module each; `model_src/data/curate.py` composes them.

    reading.py        the raw shards, schema-checked, streamed row by row
    checks.py         one row's structural checks (text, answer format, images)
    hashing.py        content and perceptual hashes; the exact and near-duplicate index
    contamination.py  the eval split's index; training rows that leak an eval row
    splitting.py      the stage split by id hash; factual recaptioning
    balance.py        per-(domain, task) sampling weights
    ledger.py         the counts every row lands in, the quarantine table, the report
    writing.py        streaming parquet writers; the final split files and kept.parquet
"""
