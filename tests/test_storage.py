"""Model folders to and from an S3-compatible store (a real moto server on 127.0.0.1)."""

from __future__ import annotations

import hashlib

import pytest

from model_src.storage import fetch_s3, sha256_file, upload_s3
from tests.s3_server import s3_server


def test_upload_then_fetch_keeps_every_byte(tmp_path, monkeypatch):
    folder = tmp_path / "exported"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 1000)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "README.md").write_text("# card")
    with s3_server("exports") as (env, client):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        uploaded = upload_s3(folder, "s3://exports/glm/run-1")
        assert set(uploaded) == {"glm/run-1/model.safetensors", "glm/run-1/config.json", "glm/run-1/sub/README.md"}
        for key, digest in uploaded.items():
            body = client.get_object(Bucket="exports", Key=key)
            assert hashlib.sha256(body["Body"].read()).hexdigest() == digest  # the stored bytes
            assert body["Metadata"]["sha256"] == digest
            assert digest == sha256_file(folder / key.removeprefix("glm/run-1/"))
        fetched = fetch_s3("s3://exports/glm/run-1", cache_dir=tmp_path / "cache")
        for path in folder.rglob("*"):
            if path.is_file():
                assert (fetched / path.relative_to(folder)).read_bytes() == path.read_bytes()
        with pytest.raises(ValueError, match="not an s3:// URI"):
            upload_s3(folder, "exports/glm")


def test_fetch_refuses_keys_outside_the_cache_tampered_objects_and_incomplete_uploads(tmp_path, monkeypatch):
    from model_src.storage import StorageError

    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights" * 100)
    (folder / "config.json").write_text('{"a": 1}')
    with s3_server("exports") as (env, client):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # a key that climbs out of the cache folder: refused before anything is written
        client.put_object(Bucket="exports", Key="evil/../../../escaped.txt", Body=b"x")
        client.put_object(Bucket="exports", Key="evil/ok.txt", Body=b"x")
        with pytest.raises(StorageError, match=r"outside .*refusing"):
            fetch_s3("s3://exports/evil", cache_dir=tmp_path / "cache")
        assert not list((tmp_path / "cache").rglob("*.txt"))
        # an object whose bytes no longer match the sha256 stored with it
        upload_s3(folder, "s3://exports/run-1")
        client.put_object(Bucket="exports", Key="run-1/config.json", Body=b'{"a": 2}',
                          Metadata={"sha256": sha256_file(folder / "config.json")})
        with pytest.raises(StorageError, match="config.json' does not match its recorded sha256"):
            fetch_s3("s3://exports/run-1", cache_dir=tmp_path / "cache")
        # an upload that did not finish: its manifest lists an object that is not there
        upload_s3(folder, "s3://exports/run-2")
        client.delete_object(Bucket="exports", Key="run-2/model.safetensors")
        with pytest.raises(StorageError, match="incomplete upload"):
            fetch_s3("s3://exports/run-2", cache_dir=tmp_path / "cache")


@pytest.mark.slow  # a rare path (21 s): injected store faults; plain upload/fetch and tampering stay in the default run
def test_throttled_uploads_and_cut_off_downloads_lose_nothing(tmp_path, monkeypatch):
    """Through a proxy injecting a store's faults: 503 SlowDown answers to uploads are retried
    (boto3's own retries) and every byte arrives; a download cut off half way is retried; one cut
    off on every attempt fails the fetch naming the object, leaves no partial file under the
    object's name in the cache, and the next fetch gets it whole."""
    from model_src.storage import StorageError
    from tests.fault_proxy import FaultProxy

    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 4000)
    (folder / "config.json").write_text('{"a": 1}')
    with s3_server("exports") as (env, client), FaultProxy(env["AWS_ENDPOINT_URL"]) as proxy:
        # boto3's standard retry mode, 4 attempts: the store's retry policy as a deployment would set it
        for key, value in {**env, "AWS_ENDPOINT_URL": proxy.url, "AWS_RETRY_MODE": "standard",
                           "AWS_MAX_ATTEMPTS": "4"}.items():
            monkeypatch.setenv(key, value)
        throttled = proxy.inject("PUT", "model.safetensors", "503", times=2)
        uploaded = upload_s3(folder, "s3://exports/run-1")
        assert throttled.injected == 2  # both refusals happened and were retried
        assert hashlib.sha256(client.get_object(Bucket="exports", Key="run-1/model.safetensors")["Body"].read()
                              ).hexdigest() == uploaded["run-1/model.safetensors"]

        cut_once = proxy.inject("GET", "run-1/model.safetensors", "truncate", times=1)
        fetched = fetch_s3("s3://exports/run-1", cache_dir=tmp_path / "cache")
        assert cut_once.injected == 1
        assert (fetched / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()

        cut_always = proxy.inject("GET", "run-2/model.safetensors", "truncate", times=100)
        upload_s3(folder, "s3://exports/run-2")
        with pytest.raises(StorageError, match="downloading object 'run-2/model.safetensors' failed after boto3's retries"):
            fetch_s3("s3://exports/run-2", cache_dir=tmp_path / "cache")
        assert cut_always.injected >= 2  # retried before giving up
        target = tmp_path / "cache" / "exports" / "run-2"
        assert not (target / "model.safetensors").exists()  # no half file under the real name
        proxy.clear()
        fetched = fetch_s3("s3://exports/run-2", cache_dir=tmp_path / "cache")
        assert (fetched / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()

        # an upload whose last write (the manifest) never gets through: it fails, and readers refuse the prefix
        proxy.inject("PUT", "run-3/thinkpipe-upload.json", "503", times=100)
        with pytest.raises(StorageError, match=r"writing 'run-3/thinkpipe-upload.json' failed after boto3's retries"):
            upload_s3(folder, "s3://exports/run-3")
        with pytest.raises(StorageError, match="incomplete upload: object 'run-3/.*' was written by thinkpipe"):
            fetch_s3("s3://exports/run-3", cache_dir=tmp_path / "cache")
