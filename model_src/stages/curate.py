"""curate: every raw row checked, bad ones quarantined with a reason, the rest split per stage.

Departs from the paper, which curates web-scale corpora with model-based filters (docs/recipe.md
section 2): here rows are checked structurally (decodable image, sizes, text, answer
format), deduplicated by exact and perceptual image hash, removed when they leak an eval image or
question, recaptioned from the generator's facts and balanced by domain. A Great Expectations gate
fails the stage, before any training, when too much of a domain is quarantined.

    thinkpipe curate --input data/raw --output /tmp/curated      # the same work, outside the pipeline
"""

from __future__ import annotations

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


def work(ctx: StageContext) -> dict[str, float]:
    import mlflow

    from model_src.data.curate import curate
    from model_src.data.quality import GateError

    log_data_input(ctx.inputs["raw"], ctx.lineage, "curation")
    report_dir = ctx.outputs["report"]
    try:
        report = curate(ctx.inputs["raw"], ctx.outputs, ctx.cfg.curate)
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


def run(*, lineage: str | Lineage, data_dir: str, outputs: dict[str, str], use_cache: bool = True) -> dict[str, float]:
    """outputs: folders for `pretrain`, `sft`, `rl`, `eval` and `report`. A failed quality gate
    fails the stage after logging the report and Data Docs (under `failed_curation/`)."""
    return run_stage("curate", lineage=lineage, inputs={"raw": data_dir}, outputs=outputs, work=work, use_cache=use_cache)
