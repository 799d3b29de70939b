"""Which model to serve: a folder, `NAME/VERSION`, `NAME@alias`, or the newest exported version.

Every export registers an MLflow model version tagged `thinkpipe.export_run_id`, so the newest such
version in the tracking store (by creation time, over all registered model names, so a `tiny` and a
`small` run compete fairly) is the last export. Its files are the LoggedModel's artifacts, which are
the exported folder itself: with a local store they are served in place, from a remote store they
are downloaded once to a cache folder. The kfp output folder printed by `thinkpipe run` is not the
default because it is run-local scratch, while the registry is what the promotion gate and
`thinkpipe lineage` speak about.
"""

from __future__ import annotations

import os
from pathlib import Path

from model_src.names import CACHE_ENV, EXPORT_RUN_TAG
from model_src.serving.base import ServedModel, ServingError


def resolve_model(spec: str | None = None, tracking_uri: str | None = None,
                  cache_dir: str | Path | None = None) -> ServedModel:
    """A folder path, `NAME/VERSION`, `NAME@alias`, or None for the newest exported version."""
    if spec and Path(spec).expanduser().is_dir():
        folder = Path(spec).expanduser().resolve()
        _check_folder(folder)
        return ServedModel(folder, folder.name if folder.name != "exported" else "thinkpipe", f"folder {folder}")
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri)
    try:
        version = _pick_version(client, spec)
    except MlflowException as exc:
        raise ServingError(f"model {spec!r} not found in the MLflow registry at {client.tracking_uri}: {exc}") from exc
    folder = version_folder(client, version, cache_dir)
    _check_folder(folder)
    how = spec or "newest exported version"
    return ServedModel(folder, version.name, f"{version.name}/{version.version} ({how}; {client.tracking_uri})")


def _pick_version(client, spec: str | None):
    if spec and "@" in spec:
        name, alias = spec.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    if spec and "/" in spec and not spec.startswith(("/", ".")):
        name, number = spec.rsplit("/", 1)
        return client.get_model_version(name, number)
    if spec:
        raise ServingError(f"--model {spec!r} is neither a folder nor NAME/VERSION nor NAME@alias")
    newest = None
    for version in _all_versions(client):
        if EXPORT_RUN_TAG in version.tags and (newest is None or version.creation_timestamp > newest.creation_timestamp):
            newest = version
    if newest is None:
        raise ServingError(f"no exported model in the MLflow registry at {client.tracking_uri}: run the pipeline "
                           f"(`make run`), or pass --model FOLDER | NAME/VERSION | NAME@alias")
    return newest


def _all_versions(client):
    token = None
    while True:
        page = client.search_model_versions(max_results=200, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def version_folder(client, version, cache_dir: str | Path | None) -> Path:
    """The version's files: the LoggedModel's artifact folder when it is local, else a cached download."""
    import mlflow

    from model_src.tracking import local_artifact_path

    model_id = version.source[len("models:/"):] if version.source.startswith("models:/") else None
    location = client.get_logged_model(model_id).artifact_location if model_id else version.source
    local = local_artifact_path(location)
    if local is not None:
        return local

    cache = Path(cache_dir or Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "thinkpipe")) / "serve")
    dest = cache / version.name / str(version.version)
    if not (dest / "config.json").is_file():
        tmp = dest.with_name(dest.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(tmp), tracking_uri=client.tracking_uri)
        tmp.replace(dest)
    return dest


def _check_folder(folder: Path) -> None:
    missing = [name for name in ("config.json", "tokenizer.json", "processor_config.json") if not (folder / name).is_file()]
    if missing or not any(folder.glob("*.safetensors")):
        raise ServingError(f"{folder} is not an exported HF folder (missing {missing or ['*.safetensors']})")
