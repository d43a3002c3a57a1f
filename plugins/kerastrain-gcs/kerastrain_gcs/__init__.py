"""kerastrain plugin: checkpoints on Google Cloud Storage, scheme ``gs`` (provider ``gcs``).

Credentials come from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, the metadata server). With ``STORAGE_EMULATOR_HOST``
set (a local fake-gcs-server) the client connects there with anonymous credentials. The SDK is
imported only when a bucket is opened, so loading the plugin is fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from kerastrain.errors import StorageError
from kerastrain.hookspecs import hookimpl
from kerastrain.storage import DEFAULT_PART_SIZE, translated_errors

CHUNK_UNIT = 256 * 1024  # resumable-upload chunks must be multiples of 256 KiB
SDK_RETRY_S = 20.0  # the SDK retries for 120 s by default; the uploader retries patiently itself
TIMEOUT = (10, 120)  # (connect, read) seconds


class GCSStorage:
    """One GCS bucket. Files larger than 8 MB go up as resumable uploads in ``part_size`` chunks."""

    scheme: ClassVar[str] = "gs"

    def __init__(self, bucket: str, *, part_size: int | None = None) -> None:
        from google.cloud import storage

        size = part_size or DEFAULT_PART_SIZE
        self.part_size = max(CHUNK_UNIT, size // CHUNK_UNIT * CHUNK_UNIT)
        self.client = _client(storage)
        self.bucket = bucket
        self._bucket = self.client.bucket(bucket)

    @classmethod
    def from_config(
        cls, bucket: str, options: Any = None, *, part_size: int | None = None
    ) -> GCSStorage:
        return cls(bucket, part_size=part_size)

    @staticmethod
    def _retry():
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(SDK_RETRY_S)

    def upload_file(self, local: Path, key: str) -> None:
        blob = self._bucket.blob(key, chunk_size=self.part_size)
        with _errors(self.bucket, key):
            # An explicit retry: uploads without a generation precondition are not retried by default.
            blob.upload_from_filename(str(local), timeout=TIMEOUT, retry=self._retry())

    def download_file(self, key: str, local: Path) -> None:
        with _errors(self.bucket, key):
            self._bucket.blob(key).download_to_filename(
                str(local), timeout=TIMEOUT, retry=self._retry()
            )

    def list_keys(self, prefix: str) -> dict[str, int]:
        with _errors(self.bucket, prefix):
            blobs = self.client.list_blobs(
                self.bucket, prefix=prefix, timeout=TIMEOUT, retry=self._retry()
            )
            return {b.name: int(b.size or 0) for b in blobs}

    def exists(self, key: str) -> bool:
        with _errors(self.bucket, key):
            return self._bucket.blob(key).exists(timeout=TIMEOUT, retry=self._retry())

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            self._bucket.blob(key).delete(timeout=TIMEOUT, retry=self._retry())
        except NotFound:
            pass  # already gone: deleting is idempotent


def _client(storage):
    """The storage client: anonymous against an emulator, Application Default Credentials otherwise."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "kerastrain-emulator")
        return storage.Client(project=project, credentials=AnonymousCredentials())
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
    except DefaultCredentialsError:
        raise StorageError(
            "no Google Cloud credentials found: run `gcloud auth application-default login` or set "
            "GOOGLE_APPLICATION_CREDENTIALS"
        ) from None


def _errors(bucket: str, key: str):
    """One-line StorageErrors for what the user must fix; network errors go through."""
    where = f"gs://{bucket}/{key}"

    def translate(exc: BaseException) -> StorageError | None:
        from google.api_core.exceptions import Forbidden, NotFound, Unauthorized

        if isinstance(exc, NotFound):
            return StorageError(f"{where} does not exist (or bucket {bucket!r} does not)")
        if isinstance(exc, (Forbidden, Unauthorized)):
            return StorageError(f"access to {where} denied; check your Google Cloud credentials")
        return None

    return translated_errors(translate)

@hookimpl
def register_storage_backends(register) -> None:
    register(GCSStorage)
