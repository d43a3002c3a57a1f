"""Background checkpoint uploads, remote listing and fetching, on each storage server; faults."""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import threading
import urllib.parse

import pytest
from rich.console import Console

from kerastrain.config import CloudConfig, RunConfig
from kerastrain.errors import CheckpointError, StorageError
from kerastrain.storage import cloud_sync
from kerastrain.storage.backends import LocalStorage, backend_for, parse_url
from kerastrain.storage.manifest import MANIFEST_NAME, read_manifest, verify, write_manifest
from kerastrain.storage.remote import fetch_checkpoint, list_remote_checkpoints, newest_complete
from kerastrain.storage.uploader import CheckpointUploader, RetryPolicy, not_uploaded_reason
from tests.storage_servers import AZURITE_ACCOUNT, AZURITE_KEY, PART_SIZE, make_checkpoint

FAST_RETRY = RetryPolicy(total_s=1.5, initial_s=0.2, max_s=0.5)


@pytest.fixture(autouse=True)
def quick_sdk_retries(monkeypatch):
    # The SDKs retry a refused connection on their own for seconds; fault tests stop servers and
    # the uploader's own retries are what is under test.
    import kerastrain_azure
    import kerastrain_gcs

    monkeypatch.setattr(kerastrain_gcs, "SDK_RETRY_S", 1.0)
    monkeypatch.setattr(kerastrain_azure, "SDK_RETRY_TOTAL", 0)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


def _root_url(server, tmp_path) -> str:
    return str(tmp_path / "remote" / "checkpoints") if server is None else server.new_bucket_url()


def _console() -> Console:
    return Console(file=io.StringIO(), width=200, force_terminal=False)


def _uploader(url, **kwargs) -> CheckpointUploader:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("console", _console())
    return CheckpointUploader(url, part_size=PART_SIZE, **kwargs)


def test_upload_list_fetch_round_trip(storage_server, tmp_path):
    root = _root_url(storage_server, tmp_path)
    local = tmp_path / "run"
    first = make_checkpoint(local, 10, big=True)
    second = make_checkpoint(local, 20)
    uploader = _uploader(root)
    uploader.submit(first)
    uploader.submit(second)
    assert uploader.finish(timeout=120) == []
    assert "All 2 checkpoint upload(s)" in uploader.console.file.getvalue()

    found = list_remote_checkpoints(root)
    assert [(c.name, c.step) for c in found] == [
        ("checkpoint_step_10", 10),
        ("checkpoint_step_20", 20),
    ]
    assert newest_complete(root).name == "checkpoint_step_20"

    fetched = fetch_checkpoint(f"{root}/checkpoint_step_10", tmp_path / "fetched")
    assert fetched == tmp_path / "fetched" / "checkpoint_step_10"
    assert verify(fetched).files == read_manifest(first).files
    assert (fetched / "model.weights.bin").read_bytes() == (
        first / "model.weights.bin"
    ).read_bytes()
    # The root URL itself holds no checkpoint: the newest complete one under it is fetched.
    assert fetch_checkpoint(root, tmp_path / "latest").name == "checkpoint_step_20"


class RecordingStorage(LocalStorage):
    """Local storage that records upload order and can fail (or run a callback) on one upload."""

    def __init__(self, root, fail_on: int | None = None, before_upload=None):
        super().__init__(root)
        self.keys: list[str] = []
        self.fail_on, self.before_upload = fail_on, before_upload

    def upload_file(self, local, key):
        if self.before_upload:
            self.before_upload(len(self.keys))
        if self.fail_on is not None and len(self.keys) == self.fail_on:
            self.fail_on = None
            raise ConnectionError("connection reset by peer")
        super().upload_file(local, key)
        self.keys.append(key)


def test_manifest_goes_last_and_a_retry_resends_only_what_is_missing(tmp_path):
    backend = RecordingStorage(tmp_path / "bucket", fail_on=2)
    folder = make_checkpoint(tmp_path / "run", 5)
    (folder / "extra.bin").write_bytes(b"x" * 100)
    write_manifest(folder, {"step": 5})
    uploader = _uploader(parse_url(str(tmp_path / "bucket" / "ck")), backend=backend)
    uploader.submit(folder)
    assert uploader.finish(timeout=30) == []
    names = [k.rsplit("/", 1)[-1] for k in backend.keys]
    # Three data files (the failed third one sent again on the retry), then the manifest.
    assert names == ["extra.bin", "slots.bin", "state.json", MANIFEST_NAME]
    assert uploader.jobs[0].attempts == 2


def test_failures_are_reported_and_finish_lists_what_did_not_upload(tmp_path):
    backend = RecordingStorage(tmp_path / "bucket")
    backend.upload_file = lambda local, key: (_ for _ in ()).throw(TimeoutError("timed out"))
    errors: list[str] = []
    uploader = _uploader(
        parse_url(str(tmp_path / "bucket")),
        backend=backend,
        on_error=lambda job, msg: errors.append(msg),
    )
    folder = make_checkpoint(tmp_path / "run", 3)
    uploader.submit(folder)
    assert uploader.wait(timeout=10)
    assert (
        len(errors) == 1
        and "TimeoutError: timed out" in errors[0]
        and "local copy kept" in errors[0]
    )
    assert uploader.pending_dirs() == {folder}
    failed = uploader.finish(timeout=5)
    assert [j.local_dir for j in failed] == [folder]
    assert failed[0].state == "failed" and failed[0].error == "TimeoutError: timed out"
    # The printed line is plain text, whole on one line, whatever the console's width or
    # terminal detection (rich wraps and crops otherwise).
    line = f"Not uploaded: {not_uploaded_reason(failed[0], 5)}"
    assert str(folder) in line and "TimeoutError: timed out" in line
    for console in (uploader.console, Console(file=io.StringIO(), width=40, force_terminal=True)):
        if console is not uploader.console:
            again = _uploader(parse_url(str(tmp_path / "bucket")), backend=backend,
                              on_error=lambda job, msg: None, console=console)
            again.submit(folder)
            assert again.wait(timeout=10)
            again.finish(timeout=5)
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.file.getvalue())
        assert line in plain.splitlines()


def test_submit_refuses_an_incomplete_local_checkpoint(tmp_path):
    folder = make_checkpoint(tmp_path, 1)
    (folder / MANIFEST_NAME).unlink()
    uploader = _uploader(str(tmp_path / "remote"))
    with pytest.raises(CheckpointError, match="no manifest.json"):
        uploader.submit(folder)
    uploader.close()


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_server_stops_mid_upload_then_retry_completes(kind, request, tmp_path):
    server = request.getfixturevalue(kind)
    root = server.new_bucket_url()
    real = backend_for(root, part_size=PART_SIZE)
    stopped = threading.Event()

    def stop_after_first_file(sent: int):
        if sent == 1 and not stopped.is_set():
            stopped.set()
            server.stop()

    class StopsServer:
        """The real backend, but the server goes down after the first file of the upload."""

        scheme, bucket = real.scheme, real.bucket
        count = 0

        def upload_file(self, local, key):
            stop_after_first_file(self.count)
            real.upload_file(local, key)
            self.count += 1

        def __getattr__(self, name):
            return getattr(real, name)

    errors: list[str] = []
    uploader = _uploader(root, backend=StopsServer(), on_error=lambda job, msg: errors.append(msg))
    first = make_checkpoint(tmp_path, 10, big=True)
    uploader.submit(first)
    assert uploader.wait(timeout=60)
    assert stopped.is_set() and len(errors) == 1, errors
    assert "checkpoint_step_10" in errors[0] and "local copy kept" in errors[0]
    assert verify(first)  # the local checkpoint is untouched

    server.start()  # same port, same data
    assert list_remote_checkpoints(root) == []  # files without a manifest are not a checkpoint
    with pytest.raises(CheckpointError, match="incomplete .*no complete checkpoint under"):
        fetch_checkpoint(f"{root}/checkpoint_step_10", tmp_path / "fetched")

    second = make_checkpoint(tmp_path, 20)
    uploader.submit(second)  # the next checkpoint retries the failed one too
    assert uploader.finish(timeout=60) == []
    assert [c.step for c in list_remote_checkpoints(root)] == [10, 20]
    assert verify(fetch_checkpoint(f"{root}/checkpoint_step_10", tmp_path / "fetched"))


def test_server_down_before_upload_then_finish_retries(s3, tmp_path):
    root = s3.new_bucket_url()
    errors: list[str] = []
    uploader = _uploader(root, on_error=lambda job, msg: errors.append(msg))
    s3.stop()
    try:
        uploader.submit(make_checkpoint(tmp_path, 1))
        assert uploader.wait(timeout=60) and len(errors) == 1
        assert "EndpointConnectionError" in errors[0] or "Connect" in errors[0], errors
    finally:
        s3.start()
    assert uploader.finish(timeout=60) == []  # finish retries the failed upload
    assert newest_complete(root).step == 1


def test_fetch_refuses_incomplete_remote_and_names_newest_complete(storage_server, tmp_path):
    root = _root_url(storage_server, tmp_path)
    uploader = _uploader(root)
    for step in (10, 20, 30):
        uploader.submit(make_checkpoint(tmp_path / "run", step))
    assert uploader.finish(timeout=60) == []
    backend = backend_for(root)
    prefix = parse_url(root)
    backend.delete(prefix.key("checkpoint_step_30/state.json"))
    backend.delete(prefix.key("checkpoint_step_20/manifest.json"))

    assert [c.step for c in list_remote_checkpoints(root)] == [10]
    with pytest.raises(CheckpointError) as err:
        fetch_checkpoint(f"{root}/checkpoint_step_30", tmp_path / "fetched")
    message = err.value.format_message()
    assert "state.json is missing" in message and "\n" not in message
    assert f"newest complete checkpoint under {root}: {root}/checkpoint_step_10" in message
    with pytest.raises(
        CheckpointError, match="checkpoint_step_20 is incomplete .*no manifest.json"
    ):
        fetch_checkpoint(f"{root}/checkpoint_step_20", tmp_path / "fetched")
    with pytest.raises(CheckpointError, match="nothing is stored there"):
        fetch_checkpoint(f"{root}/checkpoint_step_99", tmp_path / "fetched")
    assert not (tmp_path / "fetched" / "checkpoint_step_30").exists()


def test_fetch_detects_corruption_and_reuses_an_intact_copy(tmp_path):
    root = tmp_path / "remote"
    folder = make_checkpoint(root, 4)
    dest = tmp_path / "dest"
    fetched = fetch_checkpoint(str(folder), dest)
    stamp = (fetched / "state.json").stat().st_mtime_ns
    assert fetch_checkpoint(str(folder), dest) == fetched  # intact copy: nothing downloaded again
    assert (fetched / "state.json").stat().st_mtime_ns == stamp
    (folder / "state.json").write_text('{"step": 5}\n')  # same size, other bytes
    with pytest.raises(CheckpointError, match="corrupt: state.json fails its sha256"):
        fetch_checkpoint(str(folder), tmp_path / "dest2")
    assert list((tmp_path / "dest2").iterdir()) == []  # the partial download is gone


def test_unreachable_server_is_a_one_line_storage_error(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(
        StorageError, match=r"^cannot read s3://b/c/checkpoint_step_1: EndpointConnectionError"
    ) as err:
        fetch_checkpoint("s3://b/c/checkpoint_step_1", "/tmp/unused")
    assert "\n" not in err.value.format_message()


# -- the run's uploads (cloud_sync) ------------------------------------------------------------


def _stand_in_run(tmp_path, cloud: CloudConfig):
    from types import SimpleNamespace

    return SimpleNamespace(config=RunConfig(cloud=cloud), output_dir=tmp_path / "out",
                           console=_console())


def test_cloud_sync_uploads_each_checkpoint(s3, tmp_path):
    bucket = s3.make_bucket()
    run = _stand_in_run(tmp_path, CloudConfig(provider="s3", bucket=bucket, prefix="runs/a"))
    uploads = cloud_sync.start_uploads(run.config.cloud, run.console)
    for step in (20, 40):
        uploads.submit(make_checkpoint(run.output_dir, step))
    assert uploads.finish() == {}
    found = list_remote_checkpoints(f"s3://{bucket}/runs/a")
    assert [str(c.url) for c in found] == [
        f"s3://{bucket}/runs/a/checkpoint_step_20",
        f"s3://{bucket}/runs/a/checkpoint_step_40",
    ]
    out = run.console.file.getvalue()
    assert f"uploaded to s3://{bucket}/runs/a" in out and "All 2 checkpoint upload(s)" in out


def test_cloud_sync_does_nothing_without_a_provider(tmp_path):
    run = _stand_in_run(tmp_path, CloudConfig())
    assert cloud_sync.start_uploads(run.config.cloud, run.console) is None
    assert run.console.file.getvalue() == ""


def test_secrets_never_appear_in_output_or_files(azure, tmp_path, monkeypatch, caplog, capfd):
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    caplog.set_level(logging.DEBUG)
    container = azure.make_bucket()
    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    signature = urllib.parse.parse_qs(sas)["sig"][0]
    secrets = {sas, signature, urllib.parse.quote(signature, safe=""), AZURITE_KEY}
    # Account name + SAS token from the run options, not a connection string.
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_BLOB_ENDPOINT", azure.blob_endpoint)
    from kerastrain.cli.options import parse_run_args

    cloud = parse_run_args(["--cloud-provider", "azure", "--cloud-bucket", container,
                            "--cloud-prefix", "ck", "--azure-account-name", AZURITE_ACCOUNT,
                            "--azure-sas-token", sas]).cloud
    run = _stand_in_run(tmp_path, cloud)
    run.output_dir.mkdir(parents=True)
    run.config.save(run.output_dir / "run_config.json")
    uploads = cloud_sync.start_uploads(run.config.cloud, run.console)
    uploads.submit(make_checkpoint(run.output_dir, 1))
    assert uploads.finish() == {}
    assert [c.step for c in list_remote_checkpoints(f"az://{container}/ck", cloud)] == [1]
    fetched = fetch_checkpoint(
        f"az://{container}/ck/checkpoint_step_1", tmp_path / "fetched", cloud
    )
    messages = [run.console.file.getvalue()]

    # Failure paths too: the same credentials against a server that is not there.
    monkeypatch.setenv("AZURE_STORAGE_BLOB_ENDPOINT", f"http://127.0.0.1:9/{AZURITE_ACCOUNT}")
    failing = _stand_in_run(tmp_path, cloud)
    # The remote stays unreachable: wait 3 s, then list.
    failing.config = failing.config.replace(cloud=dataclasses.replace(cloud, upload_timeout=3))
    uploads = cloud_sync.start_uploads(failing.config.cloud, failing.console)
    uploads.uploader.retry = FAST_RETRY
    uploads.submit(fetched)
    assert uploads.finish()["not_uploaded"] == [str(fetched)]
    messages.append(failing.console.file.getvalue())
    assert "Not uploaded" in messages[-1]
    with pytest.raises(StorageError) as err:
        fetch_checkpoint(f"az://{container}/ck/checkpoint_step_1", tmp_path / "again", cloud)
    messages.append(err.value.format_message())

    captured = capfd.readouterr()
    messages += [captured.out, captured.err, caplog.text]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "run_config.json" for p in files)
    for secret in secrets:
        for text in messages:
            assert secret not in text
        for path in files:
            assert secret.encode() not in path.read_bytes(), path


def test_keep_last_spares_a_checkpoint_still_uploading(s3, kerastrain_plugin, kerastrain_run,
                                                        monkeypatch):
    """``--keep-last 1`` while checkpoint_step_1 is still uploading: the run's uploads name it
    in use, pruning spares it, and its upload completes."""
    import kerastrain_s3

    from kerastrain.hookspecs import hookimpl

    release = threading.Event()
    upload = kerastrain_s3.S3Storage.upload_file

    def slow_upload(self, local, key):
        if "/checkpoint_step_1/" in key:
            assert release.wait(60), "step 4 was never saved"
        upload(self, local, key)

    monkeypatch.setattr(kerastrain_s3.S3Storage, "upload_file", slow_upload)
    seen: dict[int, list[str]] = {}

    class Peek:  # after each save, before that save's pruning: what survived the previous one
        @hookimpl
        def on_checkpoint_saved(self, run, path, step, kind):
            if kind != "step":
                return
            seen[step] = sorted(p.name for p in run.output_dir.glob("checkpoint_step_*"))
            if step == 4:
                release.set()

    kerastrain_plugin(Peek(), name="peek")
    bucket = s3.make_bucket()
    result = kerastrain_run("--max-steps", "6", "--save-every", "1", "--keep-last", "1",
                            "--cloud-provider", "s3", "--cloud-bucket", bucket,
                            "--cloud-prefix", "runs/k")
    assert result.exit_code == 0, result.output
    # Step 3 saved: step 1 (uploading) and step 2 (queued behind it) were kept, not pruned.
    assert seen[3] == ["checkpoint_step_1", "checkpoint_step_2", "checkpoint_step_3"]
    uploaded = {c.name for c in list_remote_checkpoints(f"s3://{bucket}/runs/k")}
    assert {"checkpoint_step_1", "final_checkpoint"} <= uploaded
