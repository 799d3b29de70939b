"""`serve`: vLLM's OpenAI-compatible server for an exported model."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.cli.common import DEFAULT_STATE_DIR, CliError, repo_root, resolve_tracking_uri


def cmd_serve(args: argparse.Namespace) -> int:
    """vLLM's OpenAI-compatible server, from the serving venv, for the last exported model (or --model)."""
    from model_src import serving

    root = repo_root()
    tracking_uri, _ = resolve_tracking_uri(args.tracking_uri, Path(args.state_dir or root / DEFAULT_STATE_DIR))
    try:
        model = serving.resolve_model(args.model, tracking_uri)
        return serving.serve(model, venv=Path(args.venv or root / serving.DEFAULT_VENV), host=args.host, port=args.port)
    except serving.ServingError as exc:
        raise CliError(str(exc)) from exc
