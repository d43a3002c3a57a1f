"""An unreachable remote is one condition: one retry clock and one message for all uploads, a
bounded wait at exit, and every upload completed once the remote is back."""

from __future__ import annotations

import io
import time

from rich.console import Console

from kerastrain.storage.backends import LocalStorage, parse_url
from kerastrain.storage.remote import list_remote_checkpoints
from kerastrain.storage.uploader import CheckpointUploader, RetryPolicy
from tests.storage_servers import make_checkpoint


class FlakyFolder(LocalStorage):
    """A real folder bucket whose connection is refused while ``down`` (counts the attempts)."""

    def __init__(self, root):
        super().__init__(root)
        self.down, self.attempts = True, 0

    def list_keys(self, prefix):
        self.attempts += 1
        if self.down:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        return super().list_keys(prefix)


def _uploader(tmp_path, backend, errors):
    return CheckpointUploader(
        parse_url(str(tmp_path / "bucket" / "ck")), backend=backend,
        retry=RetryPolicy(total_s=1.0, initial_s=0.2, max_s=0.4),
        console=Console(file=io.StringIO(), width=300), on_error=lambda job, m: errors.append(m),
    )


def test_dead_remote_is_one_clock_one_message_and_a_bounded_exit(tmp_path):
    backend = FlakyFolder("/")  # file URLs: keys are paths under /
    errors: list[str] = []
    uploader = _uploader(tmp_path, backend, errors)
    folders = [make_checkpoint(tmp_path / "run", step) for step in (1, 2, 3, 4)]
    for folder in folders:
        uploader.submit(folder)
    assert uploader.wait(timeout=10)
    # One round of ~1 s on a 0.2-0.4 s clock, not one round per checkpoint.
    assert backend.attempts <= 6, backend.attempts
    assert len(errors) == 1 and "3 more checkpoint(s) waiting too" in errors[0], errors
    assert "ConnectionRefusedError" in errors[0]
    assert uploader.pending_dirs() == set(folders)  # nothing may be deleted locally

    started = time.monotonic()
    failed = uploader.finish(timeout=1.5)
    assert time.monotonic() - started < 3.0
    assert sorted(j.local_dir for j in failed) == sorted(folders)
    assert len(errors) == 1  # the outage was reported once, however long it lasted


def test_finish_keeps_retrying_on_the_clock_until_the_remote_is_back(tmp_path):
    import threading

    backend = FlakyFolder("/")  # file URLs: keys are paths under /
    errors: list[str] = []
    uploader = _uploader(tmp_path, backend, errors)
    for step in (1, 2):
        uploader.submit(make_checkpoint(tmp_path / "run", step))
    assert uploader.wait(timeout=10) and len(errors) == 1
    threading.Timer(1.5, lambda: setattr(backend, "down", False)).start()  # back after 1.5 s
    assert uploader.finish(timeout=20) == []
    assert [c.step for c in list_remote_checkpoints(str(tmp_path / "bucket" / "ck"))] == [1, 2]
    assert "reachable again" in uploader.console.file.getvalue()
