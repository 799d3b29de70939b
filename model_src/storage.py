"""S3 (or any S3-compatible store) for model folders: fetch released weights, upload exports.

boto3 reads credentials and `AWS_ENDPOINT_URL` (MinIO, ...) from the environment; nothing secret
is passed in code or logged.
"""

from __future__ import annotations

import hashlib
import json
import os

from model_src.names import CACHE_ENV
from pathlib import Path


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` -> ("bucket", "some/prefix").

    >>> split_uri("s3://models/glm/tiny/")
    ('models', 'glm/tiny')
    """
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri}: not an s3:// URI")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{uri}: no bucket")
    return bucket, prefix.strip("/")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def s3_cache_dir() -> Path:
    """Where S3 checkpoints are cached: `$THINKPIPE_CACHE` (the cluster mounts a PVC there), else
    `~/.cache/thinkpipe`."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "thinkpipe")) / "s3"


UPLOAD_MANIFEST = "thinkpipe-upload.json"  # written last by upload_s3: {key: sha256} of a complete upload


class StorageError(RuntimeError):
    """An S3 prefix that cannot be trusted: a key outside the cache, a checksum that does not match,
    an upload that did not finish."""


def _transfer_errors() -> tuple[type[BaseException], ...]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (Boto3Error, BotoCoreError, ClientError)


def fetch_s3(uri: str, cache_dir: Path | None = None) -> Path:
    """Download every object under `s3://bucket/prefix/` into the cache and return the folder.

    boto3 reads credentials and `AWS_ENDPOINT_URL` (MinIO, any S3-compatible store) from the
    environment; nothing is passed in code. Objects whose size and ETag match the cached copy's
    record are not downloaded again. Fails naming the URI when nothing is there, and naming the
    key when one would land outside the cache folder (`../x`), when a downloaded object's sha256
    differs from the one stored with it (upload_s3 stores it; weights from elsewhere are checked
    where the store carries one), or when a thinkpipe upload is incomplete (its manifest, written
    last, lists an object that is missing).
    """
    import boto3
    from tqdm import tqdm

    bucket, prefix = split_uri(uri)
    target = (cache_dir or s3_cache_dir()) / bucket / prefix
    client = boto3.client("s3")
    objects = [o for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
               for o in page.get("Contents", [])]
    if not objects:
        raise FileNotFoundError(f"{uri}: no objects under this prefix (is it an HF-format checkpoint folder?)")
    root = target.resolve()
    for obj in objects:  # every key confined to the cache folder before anything is written
        relative = obj["Key"][len(prefix) + 1:]
        if not relative or relative.startswith("/") or not (root / relative).resolve().is_relative_to(root):
            raise StorageError(f"{uri}: object key {obj['Key']!r} would be written outside {target}; refusing it")
    expected = _upload_manifest(client, bucket, prefix, objects, uri)
    manifest_path = target / ".s3-manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for obj in tqdm(objects, desc=f"fetch {uri}", unit="file"):
        relative = obj["Key"][len(prefix) + 1:]
        local = target / relative
        stamp = f"{obj['Size']}:{obj['ETag']}"
        if manifest.get(relative) == stamp and local.exists():
            continue
        digest = expected.get(obj["Key"])
        if digest is None:
            digest = client.head_object(Bucket=bucket, Key=obj["Key"]).get("Metadata", {}).get("sha256")
            if digest and not expected:  # stamped by upload_s3, whose manifest (written last) is missing
                raise StorageError(f"{uri}: incomplete upload: object {obj['Key']!r} was written by thinkpipe but "
                                   f"the prefix has no {UPLOAD_MANIFEST}, which an upload writes last")
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(local.name + ".part")
        try:
            client.download_file(bucket, obj["Key"], str(partial))  # boto3 retries dropped transfers itself
        except _transfer_errors() as exc:
            partial.unlink(missing_ok=True)
            raise StorageError(f"{uri}: downloading object {obj['Key']!r} failed after boto3's retries ({exc}); "
                               f"the cache keeps no part of it: fetch again") from exc
        if digest and sha256_file(partial) != digest:
            partial.unlink()
            raise StorageError(f"{uri}: object {obj['Key']!r} does not match its recorded sha256 {digest[:12]}...")
        partial.replace(local)  # a killed download never leaves a half file under the real name
        manifest[relative] = stamp
        manifest_path.write_text(json.dumps(manifest, indent=1))
    return target


def _upload_manifest(client, bucket: str, prefix: str, objects: list[dict], uri: str) -> dict[str, str]:
    """{key: sha256} from a thinkpipe upload's manifest ({} for a prefix without one); refuses an
    upload that did not finish."""
    key = f"{prefix}/{UPLOAD_MANIFEST}"
    if not any(o["Key"] == key for o in objects):
        return {}
    listed = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    missing = sorted(set(listed) - {o["Key"] for o in objects})
    if missing:
        raise StorageError(f"{uri}: incomplete upload: {len(missing)} object(s) its manifest lists are missing, "
                           f"e.g. {missing[0]!r}")
    return listed


def upload_s3(folder: str | Path, uri: str) -> dict[str, str]:
    """Upload every file of `folder` under `s3://bucket/prefix/`; each object carries its sha256
    as metadata, and a manifest of them all is written last (`UPLOAD_MANIFEST`). Returns {key: sha256}."""
    import boto3
    from tqdm import tqdm

    bucket, prefix = split_uri(uri)
    client = boto3.client("s3")
    manifest_key = f"{prefix}/{UPLOAD_MANIFEST}" if prefix else UPLOAD_MANIFEST
    uploaded = {}
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    key = manifest_key
    try:
        client.delete_object(Bucket=bucket, Key=manifest_key)  # an earlier upload's: the prefix is incomplete until the end
        for path in tqdm(files, desc=f"upload {uri}", unit="file"):
            key = f"{prefix}/{path.relative_to(folder).as_posix()}" if prefix else path.relative_to(folder).as_posix()
            digest = sha256_file(path)
            client.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"sha256": digest}})
            uploaded[key] = digest
        key = manifest_key  # last, so that its presence means every object above is there (fetch_s3 checks it)
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(uploaded, indent=1, sort_keys=True).encode())
    except _transfer_errors() as exc:
        raise StorageError(f"{uri}: writing {key!r} failed after boto3's retries ({exc}); the prefix has no "
                           f"manifest, so readers refuse it until an upload completes") from exc
    return uploaded
