"""Storage URLs, backend lookup, the manifest, and each backend against a real local server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest

from kerastrain.errors import CheckpointError, StorageError
from kerastrain.hookspecs import hookimpl
from kerastrain.storage.backends import (
    LocalStorage,
    StorageBackend,
    StorageURL,
    backend_for,
    parse_url,
    redact,
    remote_root,
)
from kerastrain.storage.manifest import (
    MANIFEST_NAME,
    is_complete,
    read_manifest,
    verify,
    write_manifest,
)
from tests.storage_servers import BIG_FILE_SIZE, PART_SIZE, make_checkpoint

# -- URLs and lookup --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("s3://bucket/checkpoints/run1/", StorageURL("s3", "bucket", "checkpoints/run1")),
        ("gs://bucket", StorageURL("gs", "bucket", "")),
        ("gcs://bucket/p", StorageURL("gs", "bucket", "p")),
        ("az://container/a/b", StorageURL("az", "container", "a/b")),
        ("azure://container/a", StorageURL("az", "container", "a")),
        ("file:///tmp/ckpts", StorageURL("file", "/", "tmp/ckpts")),
    ],
)
def test_parse_url(url, expected):
    assert parse_url(url) == expected


def test_plain_path_is_a_file_url(tmp_path):
    parsed = parse_url(str(tmp_path / "ckpts"))
    assert parsed.scheme == "file" and str(parsed) == str(tmp_path / "ckpts")
    assert str(parse_url("s3://b/p").child("checkpoint_step_20")) == "s3://b/p/checkpoint_step_20"


@pytest.mark.parametrize("bad", ["", "s3://", "s3:///prefix", "file://relative/path"])
def test_bad_urls_are_one_line_storage_errors(bad):
    with pytest.raises(StorageError) as err:
        parse_url(bad)
    assert "\n" not in err.value.format_message() and err.value.exit_code == 2


def test_remote_root_maps_provider_names():
    cfg = SimpleNamespace(provider="gcs", bucket="runs", prefix="/checkpoints/")  # a stand-in
    assert str(remote_root(cfg)) == "gs://runs/checkpoints"
    cfg.provider = "azure"
    assert str(remote_root(cfg)) == "az://runs/checkpoints"


def test_builtin_and_plugin_backends_are_registered():
    from kerastrain.plugins import storage_backends

    found = storage_backends()
    assert found["file"].obj is LocalStorage and found["file"].plugin == "kerastrain.storage.backends"
    assert {"s3", "gs", "az"} <= set(found)
    for reg in found.values():
        assert reg.obj.scheme == reg.name and callable(reg.obj.from_config)


def test_unknown_scheme_says_what_to_install():
    with pytest.raises(StorageError, match="no storage backend for nope://"):
        backend_for("nope://bucket/x")


def test_third_party_scheme_through_the_hook(kerastrain_plugin, tmp_path):
    class MemoryStorage(LocalStorage):
        scheme: ClassVar[str] = "mem"

        @classmethod
        def from_config(cls, bucket, options=None, *, part_size=None):
            return cls(tmp_path / bucket)

    class Plugin:
        @hookimpl
        def register_storage_backends(self, register):
            register(MemoryStorage)

    kerastrain_plugin(Plugin(), name="test-mem-storage")
    backend = backend_for("mem://box/prefix")
    assert isinstance(backend, MemoryStorage) and isinstance(backend, StorageBackend)
    assert backend.root == tmp_path / "box"


def test_provider_name_takes_bucket_from_config(tmp_path):
    backend = backend_for("file", SimpleNamespace(bucket=str(tmp_path), prefix="c"))
    assert isinstance(backend, LocalStorage)


def test_modules_import_without_cloud_sdks():
    code = (
        "import sys, kerastrain.storage.backends, kerastrain.storage.uploader, kerastrain.storage.manifest, "
        "kerastrain.storage.cloud_sync, kerastrain_s3, kerastrain_gcs, kerastrain_azure\n"
        "heavy = [m for m in ('boto3', 'botocore', 'google.cloud.storage', 'azure.storage.blob', "
        "'rich.progress', 'keras', 'jax') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_redact_scrubs_signatures_and_keys(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-aws-key")
    text = "GET https://a.blob/c?sv=2024&sig=AbC%2Bdef&se=1 AccountKey=xyz==; very-secret-aws-key"
    out = redact(text, ("sv=2024&sig=AbC%2Bdef",))
    assert "AbC" not in out and "xyz" not in out and "very-secret" not in out


# -- manifest ---------------------------------------------------------------------------------


def test_manifest_lists_every_file_and_verifies(tmp_path):
    folder = make_checkpoint(tmp_path, 7)
    manifest = read_manifest(folder)
    assert [f.path for f in manifest.files] == ["optimizer/slots.bin", "state.json"]
    assert manifest.extra == {"step": 7}
    assert json.loads((folder / MANIFEST_NAME).read_text())["format"].startswith(
        "kerastrain-checkpoint/"
    )
    assert verify(folder).files == manifest.files and is_complete(folder)
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temp left


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "state.json").unlink(), "state.json is missing"),
        (lambda f: (f / "state.json").write_text("{}"), "state.json has 2 bytes"),
        (lambda f: (f / "state.json").write_text('{"step": 8}\n'), "state.json fails its sha256"),
        (lambda f: (f / MANIFEST_NAME).unlink(), "has no manifest.json"),
        (lambda f: (f / MANIFEST_NAME).write_text("{not json"), "not a valid checkpoint manifest"),
    ],
)
def test_verify_names_the_first_bad_file(tmp_path, damage, message):
    folder = make_checkpoint(tmp_path, 7)
    damage(folder)
    with pytest.raises(CheckpointError, match=message):
        verify(folder)
    assert not is_complete(folder, hashes=True)


def test_manifest_rejects_reserved_extra_fields(tmp_path):
    with pytest.raises(CheckpointError, match="cannot be named files"):
        write_manifest(tmp_path, {"files": []})
    with pytest.raises(CheckpointError, match="does not exist"):
        write_manifest(tmp_path / "nope", {})


# -- each backend against its server ---------------------------------------------------------


def _backend(server, tmp_path) -> tuple[StorageBackend, str]:
    if server is None:
        return LocalStorage.from_config(str(tmp_path / "bucket"), part_size=PART_SIZE), "file"
    bucket_url = server.new_bucket_url("")
    return backend_for(bucket_url, part_size=PART_SIZE), server.scheme


def test_backend_round_trip(storage_server, tmp_path):
    backend, _ = _backend(storage_server, tmp_path)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(BIG_FILE_SIZE))
    small = tmp_path / "small.txt"
    small.write_text("hello")
    prefix = "run/"
    backend.upload_file(big, prefix + "ckpt/big.bin")
    backend.upload_file(small, prefix + "ckpt/sub/small.txt")
    assert backend.list_keys(prefix + "ckpt/") == {
        prefix + "ckpt/big.bin": BIG_FILE_SIZE,
        prefix + "ckpt/sub/small.txt": 5,
    }
    assert backend.list_keys(prefix + "other/") == {}
    assert backend.exists(prefix + "ckpt/big.bin") and not backend.exists(prefix + "ckpt/nope")
    back = tmp_path / "back" / "big.bin"
    back.parent.mkdir()
    backend.download_file(prefix + "ckpt/big.bin", back)
    assert back.read_bytes() == big.read_bytes()
    _assert_multipart(storage_server, backend, prefix + "ckpt/big.bin")
    with pytest.raises(StorageError, match="does not exist"):
        backend.download_file(prefix + "ckpt/nope", tmp_path / "nope")
    backend.delete(prefix + "ckpt/sub/small.txt")
    backend.delete(prefix + "ckpt/sub/small.txt")  # deleting twice is fine
    assert list(backend.list_keys(prefix)) == [prefix + "ckpt/big.bin"]


def _assert_multipart(server, backend, key: str) -> None:
    """The 12 MB file went up in 5 MB parts (where the service lets us see it)."""
    if server is None:
        return
    parts = -(-BIG_FILE_SIZE // PART_SIZE)
    if server.scheme == "s3":
        etag = backend.client.head_object(Bucket=backend.bucket, Key=key)["ETag"]
        assert etag.strip('"').endswith(f"-{parts}")
    elif server.scheme == "az":
        committed, _ = backend.container.get_blob_client(key).get_block_list("committed")
        assert len(committed) == parts
    else:  # GCS does not expose chunks; check the resumable chunk size the upload used
        assert backend.part_size == PART_SIZE


def test_missing_bucket_is_a_storage_error(s3, gcs, azure):
    for url in ("s3://no-such-bucket-kt", "gs://no-such-bucket-kt", "az://no-such-container-kt"):
        with pytest.raises(StorageError, match="does not exist"):
            backend_for(url).list_keys("x/")


def test_local_storage_refuses_keys_outside_its_root(tmp_path):
    with pytest.raises(StorageError, match="outside"):
        LocalStorage(tmp_path).upload_file(Path(__file__), "../escape.py")
