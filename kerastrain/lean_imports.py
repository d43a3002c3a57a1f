"""The command line imports Keras, keras-hub and tensorboardX as if a few optional packages were
absent.

``import keras`` imports pandas (to accept DataFrames in ``fit``), ``matplotlib.pyplot`` (its
image galleries), scikit-learn (its scikit-learn wrappers) and requests (its ``RemoteMonitor``
callback; requests then imports chardet, 2.7 s here) whenever they are installed: 1-2 s each on a
loaded CPU, at every start of every command, for features kerastrain never uses (it
feeds ``jax.jit`` steps with NumPy batches and plots with matplotlib itself, lazily).
``import keras_hub`` adds rouge-score with nltk (its ROUGE metric: 8 s here) and kagglehub (its
``kaggle://`` presets: 1.4 s); kerastrain opens model folders, never Kaggle handles.
tensorboardX imports boto3 and google-cloud-storage for ``s3://`` / ``gs://`` log folders; ours
are local. Each of these imports is guarded by ``except ImportError`` in the package (it runs
without them), so while one of the packages is being imported, by the thread importing it, the
packages listed for it fail to import; before and after, and in every other thread, they import
as usual (a run that reads a Hugging Face dataset still gets pandas).

Only ``kerastrain`` commands install this (``cli``); importing kerastrain as a library changes
nothing. ``KERASTRAIN_LEAN_IMPORTS=0`` turns it off.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
import threading

ENV = "KERASTRAIN_LEAN_IMPORTS"
# Package -> what it is imported without (top-level names or dotted prefixes).
WITHOUT: dict[str, tuple[str, ...]] = {
    "keras": ("pandas", "matplotlib", "sklearn", "requests"),
    "keras_hub": ("pandas", "matplotlib", "sklearn", "requests", "rouge_score", "nltk", "kagglehub"),
    "tensorboardX": ("boto3", "google.cloud"),
}


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class _Window(importlib.abc.Loader):
    """Runs the real loader of a package with some imports refused in this thread."""

    def __init__(self, finder: LeanImports, loader, refused: tuple[str, ...]):
        self.finder, self.loader, self.refused = finder, loader, refused

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the real one, once loaded
        self.finder.refusing(self.refused)
        try:
            self.loader.exec_module(module)
        finally:
            self.finder.refusing(())


class LeanImports(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: wraps the loaders of the packages in ``WITHOUT``; refuses the
    listed imports while one of them loads (in the loading thread only)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def refusing(self, names: tuple[str, ...]) -> None:
        self._local.refused = names

    def find_spec(self, fullname, path=None, target=None):
        refused = getattr(self._local, "refused", ())
        if refused and _matches(fullname, refused):
            raise ModuleNotFoundError(f"No module named {fullname!r} (kerastrain.lean_imports)",
                                      name=fullname)
        if fullname not in WITHOUT or refused:
            return None
        spec = _find_elsewhere(self, fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Window(self, spec.loader, WITHOUT[fullname])
        return spec


def _find_elsewhere(skip, fullname, path, target):
    for finder in sys.meta_path:
        if finder is skip or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


def install() -> LeanImports | None:
    """Put the finder first on ``sys.meta_path`` (once); None when turned off or already there.
    Packages imported before this call are left as they are."""
    if os.environ.get(ENV, "1").strip().lower() in {"0", "off", "false", "no"}:
        return None
    if any(isinstance(f, LeanImports) for f in sys.meta_path):
        return None
    finder = LeanImports()
    sys.meta_path.insert(0, finder)
    return finder


def uninstall(finder: LeanImports | None) -> None:
    if finder is not None and finder in sys.meta_path:
        sys.meta_path.remove(finder)
