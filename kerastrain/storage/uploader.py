"""Checkpoint uploads in the background (finding and fetching remote ones: ``remote.py``).

The uploader sends every file of a checkpoint first and ``manifest.json`` last: a remote folder
without a manifest (or whose files do not match it) is never taken for a complete checkpoint.
Training never waits for the network; failures are retried with exponential backoff for a bounded
time, then reported (never silently dropped) and retried again at the next checkpoint or at exit.
An unreachable remote is one condition: all uploads share one retry clock (``retry_clock.py``),
one message reports the outage, and ``finish`` keeps retrying on that clock until its timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kerastrain.errors import CheckpointError, StorageError
from kerastrain.storage.backends import (
    StorageBackend,
    StorageURL,
    backend_class,
    backend_for,
    config_secrets,
    parse_url,
    redact,
)
from kerastrain.storage.manifest import (
    MANIFEST_NAME,
    CheckpointManifest,
    read_manifest,
)
from kerastrain.storage.remote import files_present, remote_text, temp_file
from kerastrain.storage.retry_clock import RemoteClock, RetryPolicy

__all__ = ["CheckpointUploader", "RetryPolicy", "UploadJob"]


@dataclass
class UploadJob:
    """One checkpoint folder on its way to ``url``. ``state``: pending, uploading, done, failed."""

    local_dir: Path
    url: StorageURL
    total_bytes: int = 0
    done_bytes: int = 0
    state: str = "pending"
    error: str | None = None
    attempts: int = 0
    uploaded: set[str] = field(default_factory=set)  # files this process has sent already
    transient: bool = False  # failed for a reason retrying may fix (the remote was unreachable)


CLOSE_GRACE_S = 5.0  # at exit, how long the worker may take to end its current upload round


def not_uploaded_reason(job: UploadJob, timeout: float | None) -> str:
    """``LOCAL → REMOTE (why)``: what ``finish`` prints after "Not uploaded:" for ``job``."""
    why = job.error or f"still {job.state} when the {timeout:g} s upload timeout ran out"
    if job.error is None and timeout is None:
        why = f"still {job.state}"
    return f"{job.local_dir} → {job.url} ({why})"


class _Permanent(Exception):
    """A failure retrying cannot fix (the local checkpoint is gone or was never complete)."""


class CheckpointUploader:
    """Uploads complete local checkpoint folders under a remote root, in one background thread.

    ``remote`` is a URL such as ``s3://bucket/checkpoints``; ``submit(dir)`` uploads ``dir`` to
    ``remote/<dir name>``. ``on_error(job, message)`` is called when a round of retries gives up
    (default: a red console line); ``on_uploaded(job)`` when a checkpoint is complete remotely.
    """

    def __init__(
        self,
        remote: str | StorageURL,
        cloud_config: Any = None,
        *,
        backend: StorageBackend | None = None,
        retry: RetryPolicy = RetryPolicy(),
        part_size: int | None = None,
        console: Any = None,
        on_error: Callable[[UploadJob, str], None] | None = None,
        on_uploaded: Callable[[UploadJob], None] | None = None,
    ) -> None:
        self.remote = remote if isinstance(remote, StorageURL) else parse_url(str(remote))
        if backend is None:
            backend_class(self.remote.scheme)  # a missing plugin is a user error: say so now
        self._backend = backend
        self._cloud_config = cloud_config
        self._secrets = config_secrets(cloud_config) if cloud_config is not None else ()
        self.retry = retry  # also sets self.clock: one retry clock for the whole remote
        self.part_size = part_size
        self.console = console
        self.on_error = on_error or self._print_error
        self.on_uploaded = on_uploaded
        self.jobs: list[UploadJob] = []
        self._queue: list[UploadJob] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._busy = False
        self._thread = threading.Thread(target=self._work, name="checkpoint-upload", daemon=True)
        self._thread.start()

    @property
    def retry(self) -> RetryPolicy:
        return self.clock.policy

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        self.clock = RemoteClock(policy)

    # -- public API ------------------------------------------------------------------------

    def submit(self, checkpoint_dir: str | Path, name: str | None = None) -> UploadJob:
        """Queue a complete checkpoint folder (it must hold ``manifest.json``) for upload, and
        queue again every earlier upload that failed (the server may be back)."""
        if self._stop.is_set():
            raise RuntimeError("this CheckpointUploader is closed; create a new one")
        local = Path(checkpoint_dir)
        read_manifest(local)  # refuse an incomplete checkpoint now, in the caller's thread
        url = self.remote.child(name or local.name)
        self.retry_failed()
        with self._cond:
            for job in self._queue:
                if job.url == url and job.local_dir == local:
                    return job  # already waiting; it will read the newest files when it runs
            job = UploadJob(local_dir=local, url=url)
            self.jobs.append(job)
            self._queue.append(job)
            self._cond.notify_all()
        return job

    def retry_failed(self) -> list[UploadJob]:
        """Queue again every failed upload whose local folder still exists; returns them."""
        with self._cond:
            again = [j for j in self.jobs if j.state == "failed" and j.local_dir.is_dir()]
            for job in again:
                job.state, job.error = "pending", None
                self._queue.append(job)
            self._cond.notify_all()
        return again

    def _retry_transient(self) -> bool:
        """Queue again the uploads that failed only because the remote was unreachable."""
        with self._cond:
            again = [
                j for j in self.jobs if j.state == "failed" and j.transient and j.local_dir.is_dir()
            ]
            for job in again:
                job.state = "pending"
                self._queue.append(job)
            self._cond.notify_all()
        return bool(again)

    def outstanding(self) -> list[UploadJob]:
        """Uploads not (yet) complete remotely: pending, uploading or failed."""
        with self._cond:
            return [j for j in self.jobs if j.state != "done"]

    def pending_dirs(self) -> set[Path]:
        """Local folders whose upload is not complete: do not delete them (``--keep-last``)."""
        return {j.local_dir for j in self.outstanding()}

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the queue is empty and nothing is uploading; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.1 if left is None else min(left, 0.1))
        return True

    def finish(self, timeout: float | None = None, *, retry_failed: bool = True) -> list[UploadJob]:
        """At exit: retry failed uploads, wait (with a progress bar) up to ``timeout`` seconds,
        stop the worker, print and return exactly the checkpoints that did not upload."""
        from rich.errors import LiveError
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        if retry_failed:
            self.retry_failed()
        console = self._get_console()
        deadline = None if timeout is None else time.monotonic() + timeout
        left = self.outstanding()
        if left:
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeElapsedColumn(),
            )
            progress = Progress(*columns, console=console, transient=False)
            try:
                progress.start()
            except LiveError:  # called inside another live display: wait without a bar
                progress = None
            try:
                task = None
                if progress is not None:
                    task = progress.add_task(
                        f"Uploading {len(left)} checkpoint(s) to {self.remote}"
                    )
                while True:
                    with self._cond:
                        idle = not self._queue and not self._busy
                        total = sum(j.total_bytes for j in left) or None
                        done = sum(
                            j.total_bytes if j.state == "done" else j.done_bytes for j in left
                        )
                    if progress is not None:
                        progress.update(task, total=total, completed=done)
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    # An unreachable remote: keep retrying on its clock until the deadline.
                    if idle and (deadline is None or not self._retry_transient()):
                        break
                    time.sleep(0.1)
            finally:
                if progress is not None:
                    progress.stop()
        self.close()
        with self._cond:  # the worker ends its round (marking the job failed with its reason)
            self._cond.wait_for(lambda: not self._busy, timeout=CLOSE_GRACE_S)
        failed = self.outstanding()
        for job in failed:
            # One plain line per checkpoint, never wrapped or cropped (soft_wrap): whatever the
            # console's width or terminal detection, a user (or a log grep) finds the whole path.
            console.print(
                f"[red]Not uploaded:[/] {not_uploaded_reason(job, timeout)}",
                highlight=False,
                soft_wrap=True,
            )
        if self.jobs and not failed:
            console.print(
                f"All {len(self.jobs)} checkpoint upload(s) to {self.remote} complete.",
                highlight=False,
            )
        return failed

    def close(self) -> None:
        """Stop the worker after its current file (uploads still queued are left undone)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    # -- worker ----------------------------------------------------------------------------

    def _get_console(self):
        if self.console is None:
            from rich.console import Console

            self.console = Console(stderr=True)
        return self.console

    def _print_error(self, job: UploadJob, message: str) -> None:
        self._get_console().print(f"[red]Checkpoint upload failed:[/] {message}", highlight=False)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                job = self._queue.pop(0)
                self._busy = True
                job.state = "uploading"
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _run(self, job: UploadJob) -> None:
        started = time.monotonic()
        while True:
            # One clock for the remote: while it is down, every upload waits for the same clock.
            wait = self.clock.wait_s()
            if wait and self._stop.wait(wait):
                self._fail_round(job, self.clock.reason or "the uploader was closed")
                return
            job.attempts += 1
            try:
                self._upload_once(job)
            except Exception as exc:  # every failure is reported or retried, none is dropped
                reason = self._describe(exc)
                permanent = isinstance(exc, _Permanent)
                # A StorageError (no credentials, no such bucket) needs the user: stop this round.
                if permanent or isinstance(exc, StorageError):
                    job.state, job.error, job.transient = "failed", reason, False
                    kept = "" if permanent else self._kept(job)
                    self.on_error(job, f"{job.local_dir.name} → {job.url}: {reason}{kept}")
                    return
                self.clock.failed(reason)
                out_of_time = time.monotonic() - started + self.clock.wait_s() > self.retry.total_s
                if out_of_time or self._stop.is_set():
                    self._fail_round(job, reason)
                    return
                continue
            job.state, job.error, job.transient = "done", None, False
            down_for = self.clock.succeeded()
            if down_for is not None and down_for > 0:
                self._get_console().print(
                    f"{self.remote} is reachable again (after {down_for:.0f} s); uploading",
                    highlight=False,
                )
            if self.on_uploaded:
                self.on_uploaded(job)
            return

    @staticmethod
    def _kept(job: UploadJob) -> str:
        return (
            f"; local copy kept at {job.local_dir}, will retry at the next checkpoint or at exit"
        )

    def _fail_round(self, job: UploadJob, reason: str) -> None:
        """The remote stayed unreachable for a whole round: this upload and every upload queued
        behind it (they would meet the same dead remote) fail together, reported once."""
        with self._cond:
            waiting = list(self._queue)
            self._queue.clear()
            for other in (job, *waiting):
                other.state, other.error, other.transient = "failed", reason, True
        if self.clock.reported:
            return  # this outage was reported already; the clock keeps retrying
        self.clock.reported = True
        more = f" ({len(waiting)} more checkpoint(s) waiting too)" if waiting else ""
        self.on_error(job, f"{job.local_dir.name} → {job.url}: {reason}{self._kept(job)}{more}")

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not isinstance(exc, (StorageError, CheckpointError, _Permanent)):
            text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        return redact(text[:300], self._secrets)

    def _open_backend(self) -> StorageBackend:
        if self._backend is None:
            self._backend = backend_for(self.remote, self._cloud_config, part_size=self.part_size)
        return self._backend

    def _upload_once(self, job: UploadJob) -> None:
        if not job.local_dir.is_dir():
            raise _Permanent(f"local checkpoint {job.local_dir} was deleted before it was uploaded")
        try:
            manifest_text = (job.local_dir / MANIFEST_NAME).read_text()
            manifest = CheckpointManifest.from_json(manifest_text)
        except (OSError, CheckpointError) as exc:
            raise _Permanent(
                f"local checkpoint {job.local_dir} has no valid {MANIFEST_NAME}: {exc}"
            ) from None
        job.total_bytes = manifest.total_bytes + len(manifest_text.encode())
        job.done_bytes = 0
        backend = self._open_backend()
        remote = backend.list_keys(job.url.prefix + "/")
        manifest_key = job.url.key(MANIFEST_NAME)
        if manifest_key in remote:
            if remote_text(backend, manifest_key) == manifest_text and files_present(
                job.url, manifest, remote
            ):
                job.done_bytes = job.total_bytes
                return  # this very checkpoint is already complete remotely
            # Another checkpoint of that name: withdraw its manifest before touching its files.
            backend.delete(manifest_key)
            job.uploaded.clear()
        for entry in manifest.files:
            key = job.url.key(entry.path)
            path = job.local_dir / entry.path
            if entry.path in job.uploaded and remote.get(key) == entry.size:
                job.done_bytes += entry.size
                continue  # sent by an earlier attempt and still there
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise _Permanent(f"{path} disappeared before it was uploaded") from None
            if size != entry.size:
                raise _Permanent(f"{path} changed after the checkpoint was written")
            backend.upload_file(path, key)
            job.uploaded.add(entry.path)
            job.done_bytes += entry.size
        # The manifest goes last, from the text read above, so it matches the files just sent.
        with temp_file(manifest_text.encode()) as tmp:
            backend.upload_file(tmp, manifest_key)
        job.done_bytes = job.total_bytes
