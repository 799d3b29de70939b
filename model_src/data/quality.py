"""The curation quality gate: Great Expectations 1.x suites over the curated outputs.

Three tables are validated (image bytes left out; their count is a column):
- `kept`: the schema, non-null keys, unique ids, difficulty in [0, 1], positive weights, known
  domains / splits / answer types / caption sources, and each answer type's format (a regex per
  `answer_type`, from `schema.ANSWER_PATTERNS`);
- `quarantine`: the schema, a reason on every row;
- `domain_mix`: one row per domain with its kept share and quarantine share: every domain keeps
  at least `min_domain_share` of the kept rows and loses at most `max_quarantine_share`.

The Data Docs site is built into `<report>/data_docs/` and plots of the mix into `<report>/plots/`.
A failed expectation raises `GateError` naming the expectation, the table and the column, so the
pipeline stops before training.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from model_src.config import CurateConfig
from model_src.data.curation.reading import iter_batches
from model_src.data.schema import ANSWER_PATTERNS, DOMAINS, SPLITS


class GateError(RuntimeError):
    """A curated table failed its expectations."""


def _frame(path: Path) -> pd.DataFrame:
    # image bytes stay out of memory: only their count per row is validated
    frame = pq.read_table(path, columns=[n for n in pq.read_schema(path).names if n != "images"]).to_pandas()
    frame["num_images"] = _image_counts(path)
    return frame


def _image_counts(path: Path) -> list[int]:
    counts = []
    for batch in iter_batches(path, 1024, ["images"]):
        counts.extend(pc.list_value_length(batch.column(0)).to_pylist())
    return counts


def _suites(gx, cfg: CurateConfig, kept_columns: list[str], quarantine_columns: list[str]) -> dict[str, list]:
    E = gx.expectations
    kept = [
        E.ExpectTableColumnsToMatchSet(column_set=kept_columns, exact_match=True),
        *[E.ExpectColumnValuesToNotBeNull(column=c) for c in ("id", "domain", "question", "answer", "stage_split")],
        E.ExpectColumnValuesToBeUnique(column="id"),
        E.ExpectColumnValuesToBeBetween(column="difficulty", min_value=0.0, max_value=1.0),
        E.ExpectColumnValuesToBeBetween(column="sample_weight", min_value=0.0, strict_min=True),
        E.ExpectColumnValuesToBeBetween(column="num_images", min_value=1, max_value=16),
        E.ExpectColumnValuesToBeInSet(column="domain", value_set=[*DOMAINS, *cfg.domains]),
        E.ExpectColumnValuesToNotBeNull(column="verifier"),
        E.ExpectColumnValuesToBeInSet(column="stage_split", value_set=list(SPLITS)),
        E.ExpectColumnValuesToBeInSet(column="answer_type", value_set=list(ANSWER_PATTERNS)),
        E.ExpectColumnValuesToBeInSet(column="caption_source", value_set=["original", "recaptioned"]),
        E.ExpectColumnValueLengthsToBeBetween(column="question", min_value=1, max_value=cfg.max_text_chars),
    ]
    for answer_type, pattern in ANSWER_PATTERNS.items():
        kept.append(E.ExpectColumnValuesToMatchRegex(column="answer", regex=pattern,
                                                     row_condition=f'answer_type=="{answer_type}"',
                                                     condition_parser="pandas"))
    quarantine = [
        E.ExpectTableColumnsToMatchSet(column_set=quarantine_columns, exact_match=True),
        E.ExpectColumnValuesToNotBeNull(column="reason"),
    ]
    mix = [
        E.ExpectColumnValuesToBeBetween(column="kept_share", min_value=cfg.min_domain_share),
        E.ExpectColumnValuesToBeBetween(column="quarantine_share", max_value=cfg.max_quarantine_share),
    ]
    return {"kept": kept, "quarantine": quarantine, "domain_mix": mix}


def domain_mix(report: dict, cfg: CurateConfig = CurateConfig()) -> pd.DataFrame:
    kept_total = max(1, report["kept_rows"])
    rows = []
    for domain, n in report["input_by_domain"].items():
        if domain not in DOMAINS and domain not in cfg.domains:  # unknown domains are quarantined whole; the report lists them
            continue
        kept = report["kept_by_domain"].get(domain, 0)
        rows.append({"domain": domain, "input_rows": n, "kept_rows": kept, "kept_share": kept / kept_total,
                     "quarantine_share": report["quarantined_by_domain"].get(domain, 0) / max(1, n)})
    return pd.DataFrame(rows)


def validate_outputs(report_dir: str | Path, report: dict, cfg: CurateConfig = CurateConfig()) -> dict:
    """Run the suites, build Data Docs and plots; raise `GateError` on any failed expectation."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    report_dir = Path(report_dir)
    frames = {"kept": _frame(report_dir / "kept.parquet"), "quarantine": _frame(report_dir / "quarantine.parquet"),
              "domain_mix": domain_mix(report, cfg)}
    frames["domain_mix"].to_csv(report_dir / "domain_mix.csv", index=False)
    mix_plots(frames["kept"], report_dir / "plots")

    project = report_dir / ".gx"
    context = gx.get_context(mode="file", project_root_dir=str(project))
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_or_update_pandas("curated")
    suites = _suites(gx, cfg, [c for c in frames["kept"].columns], [c for c in frames["quarantine"].columns])
    results, failures = {}, []
    for name, expectations in suites.items():
        suite = context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": frames[name]}, result_format="SUMMARY")
        results[name] = {"success": bool(result.success), "evaluated": len(result.results),
                         "failed": sum(not r.success for r in result.results)}
        for r in result.results:
            if not r.success:
                failures.append(_describe_failure(name, r))
    context.build_data_docs()
    docs = project / "gx" / "uncommitted" / "data_docs" / "local_site"
    if docs.exists():
        shutil.copytree(docs, report_dir / "data_docs", dirs_exist_ok=True)
    shutil.rmtree(project, ignore_errors=True)  # the GX project is scratch; the docs are the record
    summary = {"suites": results, "failures": failures, "data_docs": "data_docs/index.html"}
    (report_dir / "quality.json").write_text(json.dumps(summary, indent=2))
    if failures:
        raise GateError("curation quality gate failed:\n  " + "\n  ".join(failures))
    return summary


def _describe_failure(table: str, result) -> str:
    """`kept: expect_... on column 'answer' (answer_type=="box"): 1 unexpected, e.g. [...]`."""
    kwargs = result.expectation_config.kwargs
    condition = kwargs.get("row_condition")
    if isinstance(condition, dict):  # GX stores pandas conditions as a pass-through filter
        condition = condition.get("pass_through_filter", condition)
    examples = result.result.get("partial_unexpected_list") or [result.result.get("observed_value")]
    return (f"{table}: {result.expectation_config.type} on column '{kwargs.get('column', '<table>')}'"
            + (f" ({condition})" if condition else "")
            + f": {result.result.get('unexpected_count', '')} unexpected, e.g. {examples[:3]}")


def mix_plots(kept: pd.DataFrame, out_dir: str | Path) -> None:
    """Domain mix per split, difficulty histogram and question/answer lengths, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if kept.empty:
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    kept.groupby(["domain", "stage_split"]).size().unstack(fill_value=0).plot.bar(stacked=True, ax=ax)
    ax.set_ylabel("rows")
    ax.set_title("curated rows per domain and split")
    fig.tight_layout()
    fig.savefig(out / "domain_mix.png")
    plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for domain, group in kept.groupby("domain"):
        axes[0].hist(group["difficulty"], bins=10, range=(0, 1), histtype="step", label=domain)
    axes[0].set_title("difficulty prior")
    axes[0].legend(fontsize="x-small")
    axes[1].hist(kept["question"].str.len(), bins=30)
    axes[1].set_title("question length (chars)")
    axes[2].hist(kept["reasoning"].str.len(), bins=30)
    axes[2].set_title("reasoning length (chars)")
    fig.tight_layout()
    fig.savefig(out / "lengths_difficulty.png")
    plt.close(fig)
