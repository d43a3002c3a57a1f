"""Complete checkpoints under a remote prefix: finding them and fetching one (verified).

A remote folder counts as a checkpoint only when its ``manifest.json`` is present and every file it
lists is there with the right size; a fetched copy is verified file by file (sha256).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerastrain.errors import CheckpointError, StorageError
from kerastrain.storage.backends import (
    StorageBackend,
    StorageURL,
    backend_for,
    config_secrets,
    parse_url,
    redact,
)
from kerastrain.storage.manifest import (
    MANIFEST_NAME,
    CheckpointManifest,
    read_manifest,
    sha256_file,
)


@dataclass(frozen=True)
class RemoteCheckpoint:
    """A complete checkpoint found under a remote prefix."""

    name: str
    url: StorageURL
    manifest: CheckpointManifest
    step: int | None


def list_remote_checkpoints(
    url: str | StorageURL, cloud_config: Any = None, *, backend: StorageBackend | None = None
) -> list[RemoteCheckpoint]:
    """The complete checkpoints directly under ``url`` (manifest present and every listed file
    present with the right size), oldest first (by manifest ``step``, then name)."""
    root = url if isinstance(url, StorageURL) else parse_url(str(url))
    backend = backend or backend_for(root, cloud_config)
    keys = _guard(lambda: backend.list_keys(_dir_prefix(root)), root, cloud_config)
    return _complete_children(backend, root, keys, cloud_config)


def newest_complete(
    url: str | StorageURL, cloud_config: Any = None, *, backend: StorageBackend | None = None
) -> RemoteCheckpoint | None:
    """The newest complete checkpoint directly under ``url``, or None."""
    found = list_remote_checkpoints(url, cloud_config, backend=backend)
    return found[-1] if found else None


def fetch_checkpoint(
    url: str | StorageURL,
    dest_dir: str | Path,
    cloud_config: Any = None,
    *,
    backend: StorageBackend | None = None,
) -> Path:
    """Download the checkpoint at ``url`` into ``dest_dir/<name>`` and verify every sha256
    against its manifest; returns that folder. If ``url`` holds no checkpoint itself but complete
    checkpoints lie under it, the newest is fetched. An incomplete remote checkpoint raises
    :class:`CheckpointError` naming the newest complete one under the same prefix."""
    target = url if isinstance(url, StorageURL) else parse_url(str(url))
    backend = backend or backend_for(target, cloud_config)
    keys = _guard(lambda: backend.list_keys(_dir_prefix(target)), target, cloud_config)
    manifest_key = target.key(MANIFEST_NAME)
    if manifest_key not in keys:
        children = _complete_children(backend, target, keys, cloud_config)
        if children:
            target = children[-1].url
            keys = {k: v for k, v in keys.items() if k.startswith(_dir_prefix(target))}
        else:
            why = "it has no manifest.json" if keys else "nothing is stored there"
            raise _incomplete(backend, target, why, cloud_config)
    manifest = CheckpointManifest.from_json(
        _guard(lambda: remote_text(backend, target.key(MANIFEST_NAME)), target, cloud_config),
        where=f"{target}/{MANIFEST_NAME}",
    )
    missing = _first_missing(target, manifest, keys)
    if missing:
        raise _incomplete(backend, target, missing, cloud_config)
    name = target.prefix.rsplit("/", 1)[-1] or target.bucket
    dest = Path(dest_dir) / name
    if _same_local_copy(dest, manifest):
        return dest
    Path(dest_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=f".{name}.", suffix=".partial"))
    try:
        for entry in manifest.files:
            local = tmp / entry.path
            local.parent.mkdir(parents=True, exist_ok=True)
            _guard(
                lambda e=entry, p=local: backend.download_file(target.key(e.path), p),
                target,
                cloud_config,
            )
            if sha256_file(local) != entry.sha256:
                raise CheckpointError(
                    f"remote checkpoint {target} is corrupt: {entry.path} fails its sha256 check"
                )
        (tmp / MANIFEST_NAME).write_text(manifest.to_json())
        if dest.exists():
            if not (dest / MANIFEST_NAME).exists():
                raise CheckpointError(f"{dest} exists and is not a checkpoint; move it away first")
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# -- helpers --------------------------------------------------------------------------------


def _dir_prefix(url: StorageURL) -> str:
    return f"{url.prefix}/" if url.prefix else ""


def remote_text(backend: StorageBackend, key: str) -> str:
    with tempfile.TemporaryDirectory(prefix="kerastrain-manifest-") as tmp:
        local = Path(tmp) / MANIFEST_NAME
        backend.download_file(key, local)
        return local.read_text()


def _first_missing(
    url: StorageURL, manifest: CheckpointManifest, keys: dict[str, int]
) -> str | None:
    for entry in manifest.files:
        size = keys.get(url.key(entry.path))
        if size is None:
            return f"{entry.path} is missing"
        if size != entry.size:
            return f"{entry.path} has {size} bytes, the manifest says {entry.size}"
    return None


def files_present(url: StorageURL, manifest: CheckpointManifest, keys: dict[str, int]) -> bool:
    return _first_missing(url, manifest, keys) is None


def _complete_children(
    backend: StorageBackend, root: StorageURL, keys: dict[str, int], cloud_config: Any
) -> list[RemoteCheckpoint]:
    start = _dir_prefix(root)
    names = sorted(
        {
            k[len(start) :].split("/", 1)[0]
            for k in keys
            if k.endswith("/" + MANIFEST_NAME) and k.startswith(start)
        }
    )
    found = []
    for name in names:
        url = root.child(name)
        if url.key(MANIFEST_NAME) not in keys:
            continue  # the manifest belongs to a deeper folder
        try:
            text = _guard(
                lambda u=url: remote_text(backend, u.key(MANIFEST_NAME)), url, cloud_config
            )
            manifest = CheckpointManifest.from_json(text, where=f"{url}/{MANIFEST_NAME}")
        except CheckpointError:
            continue
        if files_present(url, manifest, keys):
            step = manifest.extra.get("step")
            found.append(
                RemoteCheckpoint(name, url, manifest, step if isinstance(step, int) else None)
            )
    found.sort(key=lambda c: (c.step if c.step is not None else -1, c.name))
    return found


def _incomplete(
    backend: StorageBackend, target: StorageURL, why: str, cloud_config: Any
) -> CheckpointError:
    parent = StorageURL(
        target.scheme,
        target.bucket,
        target.prefix.rsplit("/", 1)[0] if "/" in target.prefix else "",
    )
    keys = _guard(lambda: backend.list_keys(_dir_prefix(parent)), parent, cloud_config)
    newest = _complete_children(backend, parent, keys, cloud_config)
    hint = (
        f"newest complete checkpoint under {parent}: {newest[-1].url}"
        if newest
        else f"no complete checkpoint under {parent}"
    )
    return CheckpointError(f"remote checkpoint {target} is incomplete ({why}); {hint}")


def _same_local_copy(dest: Path, manifest: CheckpointManifest) -> bool:
    """A previous fetch of the same checkpoint, intact: no need to download it again."""
    try:
        return read_manifest(dest).files == manifest.files and _verify_quietly(dest)
    except CheckpointError:
        return False


def _verify_quietly(dest: Path) -> bool:
    from kerastrain.storage.manifest import is_complete

    return is_complete(dest, hashes=True)


def _guard(call: Callable[[], Any], url: StorageURL, cloud_config: Any) -> Any:
    """Run a storage call; turn an SDK/network exception into a one-line StorageError."""
    try:
        return call()
    except (StorageError, CheckpointError):
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        secrets = config_secrets(cloud_config) if cloud_config is not None else ()
        raise StorageError(
            redact(f"cannot read {url}: {type(exc).__name__}: {first}"[:400], secrets)
        ) from None


class temp_file:
    """A temporary file holding ``data``, deleted on exit (works on every OS, unlike delete=True)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __enter__(self) -> Path:
        fd, name = tempfile.mkstemp(prefix="kerastrain-", suffix=".json")
        with os.fdopen(fd, "wb") as f:
            f.write(self.data)
        self.path = Path(name)
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
