"""curate: every raw row checked, bad ones quarantined with a reason, the rest split per stage.

Three kinds of task (model_src/data/curation/ has the passes): `plan` schema-checks the shards and
names the scan parts; `scan`, one task a part (a `dsl.ParallelFor`), checks and hashes its shards;
the stage itself joins every part's keys on disk (DuckDB), writes the splits and the report, and
owns the MLflow run. A scan task's cache key is the curate config and the data's hash (`scan_key`),
not the whole lineage, so a change to a later stage's config reuses the scans.

Departs from the paper, which curates web-scale corpora with model-based filters (docs/recipe.md
section 2): here rows are checked structurally (decodable image, sizes, text, answer
format), deduplicated by exact and perceptual image hash, removed when they leak an eval image or
question, recaptioned from the generator's facts and balanced by domain. A Great Expectations gate
fails the stage, before any training, when too much of a domain is quarantined.

    thinkpipe curate --input data/raw --output /tmp/curated      # the same work, outside the pipeline
"""

from __future__ import annotations

import json
from pathlib import Path

from model_src.lineage import Lineage
from model_src.stages.runner import StageContext, run_stage


def log_data_input(path: str | Path, lineage: Lineage, context: str) -> None:
    """Record which DVC-pinned data fed this run as an MLflow dataset input (rev and hash)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source = resolve_dataset_source(str(Path(path).resolve()))
    digest = lineage.data_hash.removesuffix(".dir")
    dataset = MetaDataset(source=source, name=f"data/raw@{lineage.data_rev[:12]}", digest=digest[:36])
    mlflow.log_input(dataset, context=context,
                     tags={"dvc.path": "data/raw", "dvc.hash": lineage.data_hash, "dvc.rev": lineage.data_rev})


def plan(*, lineage: str, data_dir: str) -> list[dict]:
    """One item a scan task: {part, parts, scan_key}. `scan_key` (the curate config and the data's
    DVC hash) is what a scan reads, so it is the scan task's cache key instead of the lineage."""
    from model_src.data.curate import plan_parts

    value = Lineage.from_json(lineage)
    scan_key = json.dumps({"curate": value.config.to_dict()["curate"], "data_hash": value.data_hash}, sort_keys=True)
    parts = plan_parts(data_dir, value.config.curate)
    return [{"part": part, "parts": len(parts), "scan_key": scan_key} for part in parts]


def scan(*, item: dict, data_dir: str, output: str) -> int:
    """Scan the part of the corpus a `plan` item names into `output`; returns the rows scanned."""
    from model_src.config import config_from_dict
    from model_src.data.curate import scan_part
    from model_src.data.curation.reading import shard_files

    cfg = config_from_dict({"curate": json.loads(item["scan_key"])["curate"]}).curate
    # a loop item's numbers arrive as floats (a protobuf Struct)
    return scan_part(shard_files(data_dir, check=False), int(item["part"]), int(item["parts"]), output, cfg)


def work(ctx: StageContext, keys_dirs: list[str] | None = None) -> dict[str, float]:
    import mlflow

    from model_src.data.curate import curate
    from model_src.data.quality import GateError

    log_data_input(ctx.inputs["raw"], ctx.lineage, "curation")
    report_dir = ctx.outputs["report"]
    try:
        report = curate(ctx.inputs["raw"], ctx.outputs, ctx.cfg.curate, keys_dirs=keys_dirs)
    except GateError:
        mlflow.log_artifacts(str(report_dir), "failed_curation")
        raise
    mlflow.log_dict(report, "report.json")
    mlflow.log_artifacts(str(report_dir / "plots"), "plots")
    return {"input_rows": report["input_rows"], "kept_rows": report["kept_rows"],
            "quarantined_rows": report["quarantined_rows"], "recaptioned_rows": report["recaptioned_rows"],
            **{f"rows/{split}": n for split, n in report["split_rows"].items()},
            **{f"quarantined/{reason}": n for reason, n in report["quarantine_reasons"].items()},
            **{f"kept/{domain}": n for domain, n in report["kept_by_domain"].items()}}


def run(*, lineage: str | Lineage, data_dir: str, outputs: dict[str, str], use_cache: bool = True,
        keys_dirs: list[str] | None = None) -> dict[str, float]:
    """outputs: folders for `pretrain`, `sft`, `rl`, `eval` and `report`; `keys_dirs`: the scan
    tasks' outputs (None: scanned here). A failed quality gate fails the stage after logging the
    report and Data Docs (under `failed_curation/`). The scans are derived from the raw data and
    the config, so they are not inputs of the stage's content key."""
    return run_stage("curate", lineage=lineage, inputs={"raw": data_dir}, outputs=outputs,
                     work=lambda ctx: work(ctx, keys_dirs), use_cache=use_cache)
