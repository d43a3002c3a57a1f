"""Open a run's remote and prove it works before the first training step.

A run that uploads checkpoints opens its storage backend and probes it (the bucket exists, a small
object can be written and deleted) before any work is done: a missing bucket, missing credentials
or an unreachable endpoint is a one-line :class:`StorageError` (exit 2), not a run whose
checkpoints silently never leave the machine.
"""

from __future__ import annotations

import uuid
from typing import Any

from kerastrain.errors import StorageError
from kerastrain.storage.backends import (
    StorageBackend,
    StorageURL,
    backend_class,
    config_secrets,
    redact,
    remote_root,
)
from kerastrain.storage.remote import temp_file

PROBE_PREFIX = ".kerastrain-probe-"


def open_remote(
    cloud_config: Any, *, part_size: int | None = None
) -> tuple[StorageURL, StorageBackend]:
    """The run's remote root URL and its opened, probed backend."""
    root = remote_root(cloud_config)
    klass = backend_class(root.scheme)
    secrets = config_secrets(cloud_config)
    backend = _checked(
        lambda: klass.from_config(root.bucket, cloud_config, part_size=part_size),
        f"cannot open {root}",
        secrets,
    )
    probe_backend(backend, root, secrets)
    return root, backend


def probe_backend(backend: StorageBackend, root: StorageURL, secrets: tuple = ()) -> None:
    """List under ``root`` (the bucket exists, we may read), then write and delete a small object
    there (we may write). Raises a one-line :class:`StorageError` naming what failed."""
    _checked(lambda: backend.list_keys(root.key("")), f"cannot list {root}", secrets)
    key = root.key(f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}")
    with temp_file(b"kerastrain write probe\n") as tmp:
        _checked(lambda: backend.upload_file(tmp, key), f"cannot write to {root}", secrets)
    _checked(lambda: backend.delete(key), f"cannot delete from {root}", secrets)


def _checked(call, what: str, secrets: tuple) -> Any:
    try:
        return call()
    except StorageError as exc:
        raise StorageError(redact(f"{what}: {exc.format_message()}", secrets)) from None
    except Exception as exc:  # a network error: say which endpoint, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StorageError(
            redact(f"{what}: {type(exc).__name__}: {first}"[:400], secrets)
            + " (is the server reachable and the endpoint right?)"
        ) from None
