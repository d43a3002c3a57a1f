"""kerastrain plugin: checkpoints on Azure Blob Storage, scheme ``az`` (provider ``azure``).

``az://CONTAINER/prefix``. Credentials, first found wins:

1. ``AZURE_STORAGE_CONNECTION_STRING``;
2. an account name (``--azure-account-name`` or ``AZURE_STORAGE_ACCOUNT``) with a SAS token
   (``--azure-sas-token`` or ``AZURE_STORAGE_SAS_TOKEN``);
3. an account name with ``DefaultAzureCredential``, if ``azure-identity`` is installed.

``AZURE_STORAGE_BLOB_ENDPOINT`` overrides the account URL (default
``https://ACCOUNT.blob.core.windows.net``), e.g. for Azurite. Secrets never appear in messages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from kerastrain.errors import StorageError
from kerastrain.hookspecs import hookimpl
from kerastrain.storage import DEFAULT_PART_SIZE, redact_logs, translated_errors

MAX_BLOCK_SIZE = 4000 * 1024 * 1024  # the service's largest block
# Few, quick SDK retries and a short connect timeout: the uploader does the patient retrying (the
# SDK's default waits 15 s, then 18 s, ... before each retry of a refused connection).
SDK_RETRY_TOTAL = 2
SDK_BACKOFF_S = 1.0
CONNECTION_TIMEOUT_S = 10


class AzureBlobStorage:
    """One Azure Blob container. Large files go up as blocks of ``part_size`` bytes."""

    scheme: ClassVar[str] = "az"

    def __init__(self, container: str, service_client: Any) -> None:
        self.bucket = container
        self.service = service_client
        self.container = service_client.get_container_client(container)

    @classmethod
    def from_config(
        cls, bucket: str, options: Any = None, *, part_size: int | None = None
    ) -> AzureBlobStorage:
        from azure.storage.blob import BlobServiceClient, LinearRetry

        size = min(part_size or DEFAULT_PART_SIZE, MAX_BLOCK_SIZE)
        # Files up to one part go in a single request, larger ones in blocks of `size`.
        kwargs = dict(
            retry_policy=LinearRetry(
                backoff=SDK_BACKOFF_S, retry_total=SDK_RETRY_TOTAL, random_jitter_range=0.5
            ),
            connection_timeout=CONNECTION_TIMEOUT_S,
            max_block_size=size,
            max_single_put_size=size,
        )
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        account = getattr(options, "azure_account_name", None) or os.environ.get(
            "AZURE_STORAGE_ACCOUNT"
        )
        sas = getattr(options, "azure_sas_token", None) or os.environ.get("AZURE_STORAGE_SAS_TOKEN")
        # urllib3 logs request URLs (with the SAS signature) at DEBUG level.
        redact_logs((sas,), ("urllib3.connectionpool", "azure"))
        if conn:
            try:
                service = BlobServiceClient.from_connection_string(conn, **kwargs)
            except ValueError:
                raise StorageError(
                    "AZURE_STORAGE_CONNECTION_STRING is not a valid connection string"
                ) from None
        elif account and sas:
            service = BlobServiceClient(_account_url(account), credential=sas.lstrip("?"), **kwargs)
        elif account:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError:
                raise StorageError(
                    "Azure needs credentials: set AZURE_STORAGE_CONNECTION_STRING, or --azure-sas-token "
                    "with --azure-account-name, or install azure-identity"
                ) from None
            service = BlobServiceClient(
                _account_url(account), credential=DefaultAzureCredential(), **kwargs
            )
        else:
            raise StorageError(
                "Azure needs AZURE_STORAGE_CONNECTION_STRING or --azure-account-name (with "
                "--azure-sas-token, or azure-identity installed)"
            )
        return cls(bucket, service)

    def upload_file(self, local: Path, key: str) -> None:
        with _errors(self.bucket, key), open(local, "rb") as f:
            self.container.upload_blob(
                key, f, overwrite=True, length=Path(local).stat().st_size, max_concurrency=2
            )

    def download_file(self, key: str, local: Path) -> None:
        with _errors(self.bucket, key):
            stream = self.container.download_blob(key, max_concurrency=2)
            with open(local, "wb") as f:
                stream.readinto(f)

    def list_keys(self, prefix: str) -> dict[str, int]:
        with _errors(self.bucket, prefix):
            return {b.name: int(b.size) for b in self.container.list_blobs(name_starts_with=prefix)}

    def exists(self, key: str) -> bool:
        with _errors(self.bucket, key):
            return self.container.get_blob_client(key).exists()

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.container.delete_blob(key)
        except ResourceNotFoundError:
            pass  # already gone: deleting is idempotent


def _account_url(account: str) -> str:
    endpoint = os.environ.get("AZURE_STORAGE_BLOB_ENDPOINT")
    return endpoint.rstrip("/") if endpoint else f"https://{account}.blob.core.windows.net"


def _errors(container: str, key: str):
    """One-line StorageErrors for what the user must fix. They never quote the SDK's message: it
    may hold the request URL with its SAS token. Network errors go through."""
    where = f"az://{container}/{key}"

    def translate(exc: BaseException) -> StorageError | None:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
        )

        if isinstance(exc, ResourceNotFoundError):
            if "ContainerNotFound" in str(getattr(exc, "error_code", None) or ""):
                return StorageError(f"Azure container {container!r} does not exist")
            return StorageError(f"{where} does not exist")
        if isinstance(exc, ClientAuthenticationError) or (
            isinstance(exc, HttpResponseError) and getattr(exc, "status_code", None) == 403
        ):
            return StorageError(f"access to {where} denied; check the Azure credentials or SAS token")
        return None

    return translated_errors(translate)

@hookimpl
def register_storage_backends(register) -> None:
    register(AzureBlobStorage)


@hookimpl
def register_run_options(register) -> None:
    # Read by from_config as options.azure_account_name / options.azure_sas_token.
    register("azure_sas_token", section="cloud", secret=True,
             envvar="AZURE_STORAGE_SAS_TOKEN", help="Azure SAS token (or $AZURE_STORAGE_SAS_TOKEN)")
    register("azure_account_name", section="cloud",
             help="Azure storage account")
