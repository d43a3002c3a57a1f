"""Where checkpoints are stored: the storage backend protocol, URLs, and the local backend.

A storage location is a URL: ``s3://bucket/prefix``, ``gs://bucket/prefix``,
``az://container/prefix``, ``file:///path`` or a plain local path. The URL's scheme picks a
backend class registered through the ``register_storage_backends`` hook, so a third party adds its
own scheme by registering a class whose ``scheme`` names it. Cloud backends live in the plugins
``kerastrain-s3``, ``kerastrain-gcs`` and ``kerastrain-azure``; only the local one is built in.

This module imports nothing heavy: cloud SDKs are imported by the plugins, inside their methods.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from kerastrain.errors import StorageError
from kerastrain.hookspecs import hookimpl

DEFAULT_PART_SIZE = 8 * 1024 * 1024  # S3's own default; large files go up in parts of this size

# ``--cloud-provider`` names that differ from the URL scheme they stand for.
PROVIDER_SCHEMES = {"gcs": "gs", "azure": "az", "local": "file"}
# Which package registers a scheme, for the "not installed" message.
SCHEME_PLUGINS = {"s3": "kerastrain-s3", "gs": "kerastrain-gcs", "az": "kerastrain-azure"}

# Environment variables whose values are secrets, scrubbed from any message we print.
SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
)
# Secrets inside URLs and connection strings (SAS signatures, account keys).
_SECRET_PATTERNS = (
    re.compile(r"(?i)(AccountKey|SharedAccessSignature)=[^;\s'\"]+"),
    re.compile(r"(?i)([?&]sig=)[^&\s'\"]+"),
)


@runtime_checkable
class StorageBackend(Protocol):
    """One bucket (or container, or local root folder) of a storage service.

    Keys are ``/``-separated paths inside the bucket. Implementations must be safe to use from
    one background thread while the main thread does something else, and should raise
    :class:`StorageError` for problems the user must fix (no credentials, no such bucket).
    Network errors may propagate as the SDK's exceptions: callers retry them.
    """

    scheme: ClassVar[str]  # the URL scheme this class serves: "s3", "gs", "az", "file"
    bucket: str

    @classmethod
    def from_config(
        cls, bucket: str, options: Any = None, *, part_size: int | None = None
    ) -> StorageBackend:
        """Open ``bucket`` with the options of a :class:`kerastrain.config.CloudConfig`
        (``region``, ``backend_options``, the options the backend's plugin declares, read as
        attributes; ``None`` for defaults).
        ``part_size`` is the size of each part/block/chunk of a large upload."""
        ...

    def upload_file(self, local: Path, key: str) -> None:
        """Upload a local file to ``key``, in parts when it is larger than the part size."""
        ...

    def download_file(self, key: str, local: Path) -> None:
        """Download ``key`` to the local path; :class:`StorageError` if it does not exist."""
        ...

    def list_keys(self, prefix: str) -> dict[str, int]:
        """Every key starting with ``prefix``, mapped to its size in bytes."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        ...

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""
        ...


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL: ``scheme://bucket/prefix`` (for ``file``: bucket ``/``, prefix the
    absolute path without its leading ``/``)."""

    scheme: str
    bucket: str
    prefix: str = ""

    def child(self, *parts: str) -> StorageURL:
        """The URL of ``prefix/part/...``."""
        joined = "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))
        return StorageURL(self.scheme, self.bucket, joined)

    def key(self, name: str) -> str:
        """The key of ``name`` under this prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        if self.scheme == "file":
            return "/" + self.prefix
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")


def parse_url(url: str) -> StorageURL:
    """Parse ``s3://bucket/prefix``, ``gs://…``, ``az://container/prefix``, ``file:///path`` or
    a plain path (relative paths become absolute)."""
    url = str(url).strip()
    if not url:
        raise StorageError("empty storage URL; give s3://bucket/prefix, gs://, az:// or a path")
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", url)
    if match is None:
        return _file_url(Path(url).expanduser())
    scheme, rest = match.group(1).lower(), match.group(2)
    scheme = PROVIDER_SCHEMES.get(scheme, scheme)
    if scheme == "file":
        if not rest.startswith("/"):
            raise StorageError(f"file URL {url!r} must be absolute: file:///path")
        return _file_url(Path(rest))
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StorageError(f"storage URL {url!r} names no bucket: {scheme}://BUCKET/prefix")
    return StorageURL(scheme, bucket, prefix.strip("/"))


def _file_url(path: Path) -> StorageURL:
    # Local URLs use the file-system root as their "bucket" so that a checkpoint folder and the
    # folder holding it are prefixes of one another, exactly as in a cloud bucket.
    return StorageURL("file", "/", path.resolve().as_posix().strip("/"))


@contextmanager
def translated_errors(translate: Callable[[BaseException], StorageError | None]) -> Iterator[None]:
    """Raise ``translate(exc)`` (a one-line :class:`StorageError` for what the user must fix, such
    as a missing bucket or denied access) in place of an SDK error; let every other error through
    (network errors: the uploader retries them). Backends wrap each SDK call in this."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        error = translate(exc)
        if error is None:
            raise
        raise error from None


def scheme_for_provider(provider: str) -> str:
    """``--cloud-provider`` name → URL scheme (``gcs`` → ``gs``, ``azure`` → ``az``)."""
    provider = provider.strip().lower()
    return PROVIDER_SCHEMES.get(provider, provider)


def remote_root(cloud_config: Any) -> StorageURL:
    """The URL a run's checkpoints go to: provider scheme + bucket + ``prefix``."""
    provider = getattr(cloud_config, "provider", None)
    bucket = getattr(cloud_config, "bucket", None)
    if not provider or not bucket:
        raise StorageError("--cloud-provider and --cloud-bucket are both needed to upload")
    scheme = scheme_for_provider(provider)
    if scheme == "file":
        return _file_url(Path(bucket).expanduser()).child(_clean(cloud_config))
    return StorageURL(scheme, bucket, _clean(cloud_config))


def _clean(cloud_config: Any) -> str:
    return (getattr(cloud_config, "prefix", "") or "").strip("/")


def backend_class(scheme: str) -> type:
    """The registered backend class for ``scheme`` (or a provider name such as ``gcs``)."""
    from kerastrain.plugins import storage_backends

    scheme = scheme_for_provider(scheme)
    found = storage_backends()
    if scheme not in found:
        hint = SCHEME_PLUGINS.get(scheme)
        where = f"install {hint}" if hint else "install a plugin that registers it"
        known = ", ".join(sorted(found)) or "none"
        raise StorageError(f"no storage backend for {scheme}:// ({where}; available: {known})")
    return found[scheme].obj


def backend_for(
    url_or_provider: str | StorageURL, cloud_config: Any = None, *, part_size: int | None = None
) -> StorageBackend:
    """Open the backend for a URL (``s3://bucket/…``) or a provider name (``s3``, ``gcs``,
    ``azure``, ``file``; the bucket then comes from ``cloud_config.bucket``)."""
    if isinstance(url_or_provider, StorageURL):
        parsed = url_or_provider
    elif not _is_provider_name(str(url_or_provider)):
        parsed = parse_url(str(url_or_provider))
    else:
        bucket = getattr(cloud_config, "bucket", None)
        if not bucket:
            raise StorageError(f"provider {url_or_provider!r} needs a bucket (--cloud-bucket)")
        parsed = remote_root(_WithProvider(cloud_config, str(url_or_provider)))
    klass = backend_class(parsed.scheme)
    return klass.from_config(parsed.bucket, cloud_config, part_size=part_size)


def _is_provider_name(text: str) -> bool:
    """A bare word naming a provider or registered scheme (not a URL or a relative path)."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", text):
        return False
    if scheme_for_provider(text) in ("s3", "gs", "az", "file"):
        return True
    from kerastrain.plugins import storage_backends

    return scheme_for_provider(text) in storage_backends()


class _WithProvider:
    """A CloudConfig view with another provider (so ``backend_for("s3", cfg)`` works)."""

    def __init__(self, config: Any, provider: str) -> None:
        self._config, self.provider = config, provider

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)


def redact(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """``text`` with every secret we know of replaced by ``<redacted>``: the given values, the
    values of :data:`SECRET_ENV_VARS`, account keys and SAS signatures."""
    values = [s for s in secrets if s]
    values += [os.environ[v] for v in SECRET_ENV_VARS if os.environ.get(v)]
    # A SAS token may be given with or without its leading "?"; scrub both forms.
    values += [v.lstrip("?") for v in values]
    for value in sorted({v for v in values if len(v) >= 8}, key=len, reverse=True):
        text = text.replace(value, "<redacted>")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(0).split("=", 1)[0] + "=<redacted>", text)
    return text


class _RedactingFilter(logging.Filter):
    """Rewrites log records that hold a secret (e.g. urllib3's DEBUG line with a SAS URL)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, tuple(self.secrets))
        if clean != message:
            record.msg, record.args = clean, None
        return True


_log_filter = _RedactingFilter()


def redact_logs(
    secrets: tuple[str | None, ...] = (), loggers: tuple[str, ...] = ("urllib3.connectionpool",)
) -> None:
    """Scrub secrets from what ``loggers`` log, from now on (HTTP libraries log request URLs,
    SAS signatures included, at DEBUG level). Backends call it when they open a client."""
    _log_filter.secrets.update(s for s in secrets if s)
    for name in loggers:
        logger = logging.getLogger(name)
        if _log_filter not in logger.filters:
            logger.addFilter(_log_filter)


def config_secrets(cloud_config: Any) -> tuple[str | None, ...]:
    """The secret values held by a CloudConfig (for :func:`redact`)."""
    secrets = getattr(cloud_config, "secrets", None)
    return tuple(secrets()) if callable(secrets) else ()


class LocalStorage:
    """A folder on local disk (or a mounted network drive) used as a bucket."""

    scheme: ClassVar[str] = "file"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.bucket = str(self.root)

    @classmethod
    def from_config(
        cls, bucket: str, options: Any = None, *, part_size: int | None = None
    ) -> LocalStorage:
        return cls(bucket)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise StorageError(f"key {key!r} points outside {self.root}")
        return path

    def upload_file(self, local: Path, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy to a temp name and rename, so a reader never sees a half-written file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        os.close(fd)
        try:
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def download_file(self, key: str, local: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise StorageError(f"{source} does not exist")
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, local)

    def list_keys(self, prefix: str) -> dict[str, int]:
        # Walk only the folder the prefix lies in, not the whole root.
        start = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        if not start.is_dir():
            return {}
        found = {}
        for path in start.rglob("*"):
            is_temp = path.name.startswith(".") and path.name.endswith(".part")
            if path.is_file() and not is_temp:
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found[key] = path.stat().st_size
        return found

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


@hookimpl
def register_storage_backends(register) -> None:
    register(LocalStorage)
