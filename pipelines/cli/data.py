"""Data outside the DAG: `data` (the generated corpus), `curate` and `ingest` (a corpus of your own)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.cli.common import CliError


def cmd_data(args: argparse.Namespace) -> int:
    from model_src.data.generate import GeneratorConfig, generate_corpus

    counts = generate_corpus(args.out, GeneratorConfig(seed=args.seed), progress=True)
    print(f"thinkpipe: wrote {sum(counts.values())} rows to {args.out} ({counts})")
    if args.check_pin:
        from model_src.lineage import dvc_dir_hash, dvc_pin

        pinned, _ = dvc_pin(Path(args.check_pin).resolve().parent, Path(args.check_pin).name)
        actual = dvc_dir_hash(args.out)
        if actual != pinned:
            raise CliError(f"regenerated {args.out} hashes to {actual}, but {args.check_pin} pins {pinned}: "
                           f"the generator or a pinned library changed; re-pin deliberately with "
                           f"`dvc commit -f data.dvc` and commit data.dvc")
        print(f"thinkpipe: {args.out} matches the pin in {args.check_pin} ({actual})")
    return 0


def cmd_curate(args: argparse.Namespace) -> int:
    from model_src.config import load_config
    from model_src.data.curate import CurationError, curate
    from model_src.data.quality import GateError
    from model_src.data.schema import SPLITS

    cfg = load_config(args.profile, args.set or [])
    out = Path(args.output)
    try:
        report = curate(args.input, {name: out / name for name in (*SPLITS, "report")}, cfg.curate, progress=True,
                        workers=args.workers)
    except CurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GateError as exc:
        print(f"error: {exc}\n(report and Data Docs in {out / 'report'})", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in report.items() if k != "split_by_domain"}, indent=2))
    print(f"kept: {out / 'report' / 'kept.parquet'}  quarantine: {out / 'report' / 'quarantine.parquet'}  "
          f"Data Docs: {out / 'report' / 'data_docs' / 'index.html'}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from model_src.data.ingest import MappingError, ingest

    if args.write_samples:
        from model_src.data.ingest.samples import DOMAIN_CONFIG, write_samples

        mappings = write_samples(args.write_samples)
        print(f"thinkpipe: sample sources and mappings in {args.write_samples}: "
              f"{' '.join(str(m) for m in mappings)}\n(their domain: --set \"{DOMAIN_CONFIG}\")")
        if not args.mapping:
            return 0
    if not args.mapping:
        raise CliError("ingest needs --mapping FILE (one per source; `--write-samples DIR` writes examples)")
    try:
        report = ingest(args.mapping, args.out, progress=True)
    except MappingError as exc:
        raise CliError(str(exc)) from exc
    for name, counts in report["mappings"].items():
        reasons = {k.split("/", 1)[1]: n for k, n in counts.items() if k.startswith("quarantined/")}
        print(f"  {name:12s} {counts['format']:11s} {counts['records']:7d} records -> {counts.get('rows', 0):7d} rows"
              + (f", quarantined {reasons}" if reasons else ""))
    print(f"thinkpipe: {report['rows']} rows in {args.out} ({report['quarantined']} quarantined: "
          f"{Path(args.out) / 'ingest_quarantine.jsonl'}); pin them with `dvc commit` before a run")
    return 0
