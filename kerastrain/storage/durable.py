"""Durability on local disks: fsync files and the directories that name them.

A rename is atomic but not durable: after a power loss a renamed checkpoint can hold empty or
short files unless their data, and the directory entries, reached the disk first. Checkpoints call
:func:`fsync_tree` before sealing with the manifest and :func:`fsync_dir` on the parent after the
rename (the same order as ``orbax`` and SQLite use).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Make the entries of directory ``path`` (creations, renames) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows cannot open directories; nothing more to do there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (network mounts) refuse fsync on directories
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_tree(root: str | Path) -> None:
    """fsync every file under ``root``, then every directory, deepest first, ``root`` last."""
    root = Path(root)
    dirs = []
    for current, _, files in os.walk(root):
        for name in files:
            fsync_file(Path(current) / name)
        dirs.append(current)
    for directory in reversed(dirs):
        fsync_dir(directory)
