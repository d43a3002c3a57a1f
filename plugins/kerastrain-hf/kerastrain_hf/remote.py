"""Data files in object storage: ``s3://``, ``gs://``, ``az://`` and ``https://`` URLs and globs.

Files are listed and read through fsspec (s3fs, gcsfs, adlfs, aiohttp; the plugin's ``cloud``
extra). Credentials and endpoints come from the environment the checkpoint plugins read
(kerastrain-s3, -gcs, -azure), so one set of variables serves checkpoints and data:

* S3: boto's chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, roles);
  ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for another server; ``AWS_DEFAULT_REGION``.
* GCS: Application Default Credentials; anonymous against ``STORAGE_EMULATOR_HOST``.
* Azure: ``AZURE_STORAGE_CONNECTION_STRING``, or ``AZURE_STORAGE_ACCOUNT`` with
  ``AZURE_STORAGE_SAS_TOKEN`` / ``AZURE_STORAGE_KEY`` (else ``DefaultAzureCredential``);
  ``AZURE_STORAGE_BLOB_ENDPOINT`` overrides the account URL.

Every problem the user must fix (no such bucket, no files under the key, no credentials, a
missing fsspec package) is a one-line :class:`DataError` raised while the run is set up.
"""

from __future__ import annotations

import os
import re
from typing import Any

from kerastrain.errors import DataError

URL = re.compile(r"^(s3|gs|gcs|az|abfs|abfss|https?)://", re.I)
PACKAGES = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
            "abfss": "adlfs", "http": "aiohttp", "https": "aiohttp"}  # fmt: skip


def is_url(location: str) -> bool:
    return bool(URL.match(location))


def protocol(url: str) -> str:
    return url.split("://", 1)[0].lower()


def _setting(value: str) -> Any:
    """A ``--data-option`` value: JSON's true/false/numbers/null as such, anything else text."""
    import json

    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, bool | int | float) or parsed is None else value


def storage_options(url: str, settings: dict[str, str] | None = None) -> dict[str, Any]:
    """fsspec options for ``url``'s protocol: the environment's (see the module docstring), with
    ``settings`` (``--data-option KEY=VALUE``; ``a.b=...`` sets ``{"a": {"b": ...}}``) over them."""
    settings = settings or {}
    options = _from_environment(url, settings)
    for key, value in settings.items():
        *parents, last = key.split(".")
        where = options
        for part in parents:
            where = where.setdefault(part, {})
        where[last] = _setting(value)
    return options


# Settings that bring their own credentials: the environment's are not required then.
OWN_CREDENTIALS = {"key", "secret", "token", "anon", "profile", "connection_string",
                   "account_name", "account_key", "sas_token"}


def _from_environment(url: str, settings: dict[str, str]) -> dict[str, Any]:
    env = os.environ.get
    kind = protocol(url)
    own = bool(OWN_CREDENTIALS & set(settings))
    if kind == "s3":
        if not own:
            _require_aws_credentials(url)
        options: dict[str, Any] = {}
        endpoint = env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
        if env("AWS_DEFAULT_REGION") or env("AWS_REGION"):
            options["client_kwargs"] = {"region_name": env("AWS_DEFAULT_REGION") or env("AWS_REGION")}
        return options
    if kind in ("gs", "gcs"):
        emulator = env("STORAGE_EMULATOR_HOST")
        if emulator:
            # gcsfs otherwise probes for hierarchical-namespace buckets: ~60 s per call against
            # an emulator (FACTS.md).
            os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
            return {"token": "anon", "endpoint_url": emulator,
                    "project": env("GOOGLE_CLOUD_PROJECT", "kerastrain-emulator")}
        return {"project": env("GOOGLE_CLOUD_PROJECT")} if env("GOOGLE_CLOUD_PROJECT") else {}
    if kind in ("az", "abfs", "abfss"):
        if env("AZURE_STORAGE_CONNECTION_STRING"):
            return {"connection_string": env("AZURE_STORAGE_CONNECTION_STRING")}
        account = env("AZURE_STORAGE_ACCOUNT")
        if not account and own:
            return {}
        if not account:
            raise DataError(
                f"{url}: Azure needs AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT "
                f"(with AZURE_STORAGE_SAS_TOKEN, AZURE_STORAGE_KEY or azure-identity)"
            )
        options = {"account_name": account}
        if env("AZURE_STORAGE_SAS_TOKEN"):
            options["sas_token"] = env("AZURE_STORAGE_SAS_TOKEN", "").lstrip("?")
        elif env("AZURE_STORAGE_KEY"):
            options["account_key"] = env("AZURE_STORAGE_KEY")
        else:
            options["anon"] = False  # adlfs then uses DefaultAzureCredential
        if env("AZURE_STORAGE_BLOB_ENDPOINT"):
            options["account_host"] = env("AZURE_STORAGE_BLOB_ENDPOINT")
        return options
    return {}


def _require_aws_credentials(url: str) -> None:
    """s3fs falls back to unsigned requests when boto finds no credentials, which turns a
    forgotten variable into a confusing AccessDenied (or, on permissive servers, silent
    anonymous reads). Fail first, with the same message as the kerastrain-s3 plugin."""
    try:
        import botocore.session
    except ImportError:
        return  # filesystem() names the missing package
    if botocore.session.Session().get_credentials() is None:
        raise DataError(
            f"{url}: no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            f"AWS_PROFILE or run `aws configure`"
        )


def filesystem(url: str, settings: dict[str, str] | None = None):
    """The fsspec file system for ``url`` and the path inside it (``settings``: see
    :func:`storage_options`)."""
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url, **storage_options(url, settings))
    except ImportError as exc:
        package = PACKAGES.get(protocol(url), "fsspec")
        raise DataError(
            f"reading {protocol(url)}:// data needs {package}: pip install "
            f"'kerastrain-hf[cloud]' (or {package})"
        ) from exc


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _translate(exc: BaseException, url: str) -> DataError:
    """One line for what listing ``url`` raised."""
    name = type(exc).__name__
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    text = f"{name} {message}"
    if "NoCredentials" in text or "Unable to locate credentials" in text or (
        "credential" in text.lower() and "DefaultAzureCredential" in text
    ):
        return DataError(f"{url}: no credentials found for {protocol(url)}:// ({message}); see "
                         f"the kerastrain-hf README for the environment variables")
    if "NoSuchBucket" in text or "ContainerNotFound" in text or "bucket does not exist" in text.lower():
        return DataError(f"{url}: the bucket does not exist")
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "403" in message:
        return DataError(f"{url}: access denied ({message}); check the credentials")
    if isinstance(exc, FileNotFoundError):
        return DataError(f"{url}: the bucket or key does not exist")
    return DataError(f"{url}: could not list the data files ({name}: {message})")


def list_files(url: str, is_data: Any, settings: dict[str, str] | None = None) -> list[str]:
    """The data files ``url`` names (a file, a glob, or a folder-like prefix), sorted, as URLs."""
    fs, path = filesystem(url, settings)
    scheme = protocol(url)
    try:
        if scheme in ("http", "https") and not _has_glob(path):
            return [url]  # one file on a web server: no listing
        if _has_glob(path):
            found = fs.glob(path)
        elif fs.isfile(path):
            found = [path]
        else:
            if not fs.exists(path.split("/", 1)[0]):
                raise FileNotFoundError(path)
            found = fs.find(path) if fs.isdir(path) else []
            found = [f for f in found if is_data(f)]
        files = sorted(f for f in found if not fs.isdir(f))
    except DataError:
        raise
    except Exception as exc:
        raise _translate(exc, url) from exc
    if not files:
        bucket = path.split("/", 1)[0]
        try:
            exists = fs.exists(bucket)
        except Exception as exc:
            raise _translate(exc, url) from exc
        if not exists:
            raise DataError(f"{url}: the bucket {bucket!r} does not exist")
        raise DataError(f"{url}: no data files there (.txt, .json, .jsonl, .parquet, .csv)")
    return [f if "://" in f else f"{scheme}://{f}" for f in files]

