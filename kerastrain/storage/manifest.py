"""The checkpoint manifest: which files make a checkpoint complete.

``manifest.json`` is written LAST into a checkpoint folder and lists every other file with its
size and sha256. A folder (local or remote) without a manifest, or whose files do not match it,
is an incomplete checkpoint: a crash, a full disk or a broken upload left it half written.
The manifest itself is written atomically (temp file + ``os.replace``), so it is either absent or
whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kerastrain.errors import CheckpointError

MANIFEST_NAME = "manifest.json"
FORMAT = "kerastrain-checkpoint/1"
_RESERVED = ("format", "files")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a checkpoint: path relative to the checkpoint folder (``/``-separated)."""

    path: str
    size: int
    sha256: str


@dataclass
class CheckpointManifest:
    """The parsed ``manifest.json``: format, files, and extra fields such as ``step``."""

    files: list[ManifestEntry]
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> str:
        data = {"format": self.format, **self.extra}
        data["files"] = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files]
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST_NAME) -> CheckpointManifest:
        try:
            data = json.loads(text)
            files = [
                ManifestEntry(str(f["path"]), int(f["size"]), str(f["sha256"]))
                for f in data["files"]
            ]
            fmt = data["format"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{where} is not a valid checkpoint manifest ({exc})") from None
        if not str(fmt).startswith("kerastrain-checkpoint/"):
            raise CheckpointError(f"{where} has unknown format {fmt!r}")
        extra = {k: v for k, v in data.items() if k not in _RESERVED}
        return cls(files=files, extra=extra, format=fmt)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_manifest_temp(name: str) -> bool:
    return name.startswith(f".{MANIFEST_NAME}.") and name.endswith(".tmp")


def write_manifest(
    checkpoint_dir: str | Path, extra: dict[str, Any] | None = None
) -> CheckpointManifest:
    """Hash every file under ``checkpoint_dir`` and write ``manifest.json`` atomically.

    Call it after every other file of the checkpoint is written and closed. ``extra`` fields
    (e.g. ``{"step": 20, "kind": "step"}``) are stored at the top level of the manifest.
    """
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint folder {root} does not exist")
    extra = dict(extra or {})
    clash = [k for k in _RESERVED if k in extra]
    if clash:
        raise CheckpointError(f"manifest extra fields cannot be named {', '.join(clash)}")
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST_NAME or _is_manifest_temp(path.name):
            continue
        entries.append(ManifestEntry(rel, path.stat().st_size, sha256_file(path)))
    manifest = CheckpointManifest(files=entries, extra=extra)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(manifest.to_json())
            f.flush()
            os.fsync(f.fileno())  # the manifest claims the files are durable; make it so
        os.replace(tmp, root / MANIFEST_NAME)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return manifest


def read_manifest(checkpoint_dir: str | Path) -> CheckpointManifest:
    """Parse ``checkpoint_dir/manifest.json``; :class:`CheckpointError` if absent or invalid."""
    path = Path(checkpoint_dir) / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(f"{checkpoint_dir} is incomplete: it has no {MANIFEST_NAME}")
    return CheckpointManifest.from_json(path.read_text(), where=str(path))


def verify(checkpoint_dir: str | Path, *, hashes: bool = True) -> CheckpointManifest:
    """Check every file listed in the manifest: present, right size and (if ``hashes``) right
    sha256. Raises :class:`CheckpointError` naming the first file that is not."""
    root = Path(checkpoint_dir)
    manifest = read_manifest(root)
    for entry in manifest.files:
        path = root / entry.path
        if not path.is_file():
            raise CheckpointError(f"checkpoint {root} is incomplete: {entry.path} is missing")
        size = path.stat().st_size
        if size != entry.size:
            raise CheckpointError(
                f"checkpoint {root} is incomplete: {entry.path} has {size} bytes, "
                f"the manifest says {entry.size}"
            )
        if hashes and sha256_file(path) != entry.sha256:
            raise CheckpointError(
                f"checkpoint {root} is corrupt: {entry.path} fails its sha256 check"
            )
    return manifest


def is_complete(checkpoint_dir: str | Path, *, hashes: bool = False) -> bool:
    """Whether the folder has a manifest and every listed file with the right size (and sha256
    when ``hashes``; off by default because hashing gigabytes is slow)."""
    try:
        verify(checkpoint_dir, hashes=hashes)
    except CheckpointError:
        return False
    return True
