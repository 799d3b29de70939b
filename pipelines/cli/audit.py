"""Audit what ran: `lineage` (a registered version back to its data) and `stages` (the registry)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.cli.common import DEFAULT_STATE_DIR, repo_root, resolve_tracking_uri


def cmd_lineage(args: argparse.Namespace) -> int:
    from model_src.lineage_report import lineage_report, render_lineage

    tracking_uri, _ = resolve_tracking_uri(args.tracking_uri, Path(args.state_dir or repo_root() / DEFAULT_STATE_DIR))
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    report = lineage_report(args.model)
    print(json.dumps(report, indent=2) if args.json else render_lineage(report))
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from model_src.stages.registry import describe

    print(describe())
    return 0
