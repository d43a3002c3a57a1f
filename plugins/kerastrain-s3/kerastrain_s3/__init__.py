"""kerastrain plugin: checkpoints on Amazon S3 (and S3-compatible servers), scheme ``s3``.

Credentials come from boto3's standard chain (environment, ``~/.aws``, SSO, instance roles);
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points it at another server; ``--cloud-region``
sets the region. boto3 is imported only when a bucket is opened, so loading the plugin is fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from kerastrain.errors import StorageError
from kerastrain.hookspecs import hookimpl
from kerastrain.storage import DEFAULT_PART_SIZE, translated_errors

MIN_PART_SIZE = 5 * 1024 * 1024  # S3 rejects smaller parts (all but the last)


class S3Storage:
    """One S3 bucket. Large files go up as multipart uploads of ``part_size`` parts."""

    scheme: ClassVar[str] = "s3"

    def __init__(
        self, bucket: str, *, region: str | None = None, part_size: int | None = None
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.part_size = max(part_size or DEFAULT_PART_SIZE, MIN_PART_SIZE)
        # Few SDK retries and short connect timeouts: the uploader does the patient retrying.
        config = Config(
            connect_timeout=10, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
        )
        self.client = boto3.session.Session().client("s3", region_name=region, config=config)

    @classmethod
    def from_config(
        cls, bucket: str, options: Any = None, *, part_size: int | None = None
    ) -> S3Storage:
        return cls(bucket, region=getattr(options, "region", None), part_size=part_size)

    def _transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.part_size,
            multipart_chunksize=self.part_size,
            max_concurrency=4,
        )

    def upload_file(self, local: Path, key: str) -> None:
        with _errors(self.bucket, key):
            self.client.upload_file(str(local), self.bucket, key, Config=self._transfer_config())

    def download_file(self, key: str, local: Path) -> None:
        with _errors(self.bucket, key):
            self.client.download_file(self.bucket, key, str(local), Config=self._transfer_config())

    def list_keys(self, prefix: str) -> dict[str, int]:
        found: dict[str, int] = {}
        with _errors(self.bucket, prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    found[item["Key"]] = int(item["Size"])
        return found

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        with _errors(self.bucket, key):
            self.client.delete_object(Bucket=self.bucket, Key=key)


def _errors(bucket: str, key: str):
    """One-line StorageErrors for what the user must fix; network errors go through."""
    where = f"s3://{bucket}/{key}"

    def translate(exc: BaseException) -> StorageError | None:
        from botocore.exceptions import ClientError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return StorageError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
                "or run `aws configure`"
            )
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                return StorageError(f"{where} does not exist")
            if code == "NoSuchBucket":
                return StorageError(f"S3 bucket {bucket!r} does not exist")
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StorageError(f"access to {where} denied ({code}); check your AWS credentials")
        return None

    return translated_errors(translate)

@hookimpl
def register_storage_backends(register) -> None:
    register(S3Storage)
