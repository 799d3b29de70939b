"""`thinkpipe data`: the raw corpus, generated deterministically from a seed into `data/raw/`.

Eight domains (see `model_src/data/domains/`), one parquet shard per domain and split:
`{domain}-train.parquet` and `{domain}-eval.parquet`. Every (split, domain) pair draws from its
own seed `SeedSequence([seed, split, domain])`, so eval rows never share a seed with training rows
and adding a domain never shifts another's rows. Same seed and same pinned libraries give
byte-identical files, so `data.dvc` can pin the result and `make data` can regenerate it.

    thinkpipe data --out data/raw --seed 1234
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model_src.data.domains import DOMAINS
from model_src.data.schema import ROW_SCHEMA

SPLIT_INDEX = {"train": 0, "eval": 1}
DEFAULT_ROWS = {"stem": 400, "chart": 250, "ocr": 250, "grounding": 250, "gui": 250, "counting": 250,
                "video": 200, "digits": 450}


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 1234
    rows: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_ROWS))  # training rows per domain
    eval_fraction: float = 0.2  # eval rows per domain, relative to its training rows

    def scaled(self, factor: float) -> "GeneratorConfig":
        return GeneratorConfig(self.seed, {d: max(3, int(n * factor)) for d, n in self.rows.items()},
                               self.eval_fraction)


def domain_rows(cfg: GeneratorConfig, domain: str, split: str, n: int | None = None) -> list[dict]:
    if n is None:
        n = cfg.rows[domain] if split == "train" else max(3, int(cfg.rows[domain] * cfg.eval_fraction))
    seed = np.random.SeedSequence([cfg.seed, SPLIT_INDEX[split], list(DOMAINS).index(domain)])
    return DOMAINS[domain].rows(np.random.default_rng(seed), n, split)


def generate_corpus(out_dir: str | Path, cfg: GeneratorConfig = GeneratorConfig(),
                    progress: bool = False) -> dict[str, int]:
    """Write one parquet shard per domain and split into `out_dir`; returns rows per shard."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(cfg.rows) - set(DOMAINS))
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; known: {sorted(DOMAINS)}")
    counts = {}
    jobs = [(d, s) for d in cfg.rows for s in SPLIT_INDEX]
    for domain, split in tqdm(jobs, desc="generate", disable=not progress):
        table = pa.Table.from_pylist(domain_rows(cfg, domain, split), schema=ROW_SCHEMA)
        name = f"{domain}-{split}.parquet"
        pq.write_table(table, out / name, compression="zstd")
        counts[name] = table.num_rows
    return counts
