"""JAX's persistent compilation cache, on by default for the commands that compile (``run``,
``generate``, ``eval``, ...): a second run of the same command reads its compiled steps from disk
instead of compiling them again.

``KERASTRAIN_COMPILE_CACHE`` moves it (a folder) or turns it off (``off``, ``0``, ``none`` or
empty); the default is ``$XDG_CACHE_HOME/kerastrain/jax`` (``~/.cache/kerastrain/jax``). A folder
that cannot be written is a one-line notice on stderr and the run goes on without the cache.
``JAX_COMPILATION_CACHE_DIR``, when the user set it, wins (it is JAX's own setting).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ENV = "KERASTRAIN_COMPILE_CACHE"
OFF = {"", "0", "off", "none", "false"}
# Every compiled program gets a disk entry, the smallest too (JAX's default keeps only compiles
# of 1 s or more). A nano run compiles ~30 programs besides its step: one per initializer and
# shape, the optimizer's, the logging's. At a 0.2 s floor they were compiled again at every
# start; read from disk, a warm nano run's first step came 1.1 s sooner (7.2-7.4 -> 6.0-6.2 s,
# alternated) and a warm `generate` 0.7 s sooner (3.1 -> 2.3-2.5 s), for 0.2 MB more on disk.
MIN_COMPILE_SECONDS = 0


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kerastrain" / "jax"


def cache_dir() -> Path | None:
    """Where the cache goes, or None when it is off."""
    chosen = os.environ.get(ENV)
    if chosen is not None and chosen.strip().lower() in OFF:
        return None
    return Path(chosen).expanduser() if chosen else default_dir()


def _writable(folder: Path) -> str | None:
    """None when ``folder`` exists (or was made) and takes a file; else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def enable_compile_cache(notice=None) -> Path | None:
    """Turn the cache on for this process (before its first compile); returns its folder."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    folder = cache_dir()
    if folder is None:
        return None
    problem = _writable(folder)
    if problem is not None:
        say = notice or (lambda m: print(m, file=sys.stderr))
        say(f"Note: the compilation cache {folder} cannot be written ({problem}); compiling "
            f"without it (set {ENV} to another folder, or to off)")
        return None
    settings = {"jax_compilation_cache_dir": str(folder),
                "jax_persistent_cache_min_compile_time_secs": MIN_COMPILE_SECONDS,
                "jax_persistent_cache_min_entry_size_bytes": 0}
    if "jax" in sys.modules:  # already imported (a notebook, a test): JAX's live config
        import jax

        for name, value in settings.items():
            jax.config.update(name, value)
    else:  # read by JAX when it is imported: nothing heavy is imported here
        for name, value in settings.items():
            os.environ.setdefault(name.upper(), str(value))
    return folder
