"""The embedded default corpus: CPython's own documentation, present in every Python install.

``pydoc_data.topics`` (the language reference topics) plus the standard library's docstrings give
about 2 million characters of real English prose with no download. Documents are one topic or one
docstring each, ordered by a hash of their name so any prefix is a mix of the whole; a stable
hash of the name also puts ~5% of documents in the validation split.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import sys
import sysconfig
import zlib
from collections.abc import Iterator
from pathlib import Path

from kerastrain.data.sources import SourceRequest
from kerastrain.errors import DataError
from kerastrain.hookspecs import hookimpl

VALIDATION_PERCENT = 5
MIN_DOC_CHARS = 40
_SKIP_DIRS = {"tkinter", "idlelib", "turtledemo", "lib2to3", "ensurepip", "site-packages",
              "pydoc_data", "__pycache__", "dist-packages"}


def _cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    version = "-".join(map(str, sys.version_info[:3]))
    return base / "kerastrain" / f"default-corpus-{version}.jsonl.gz"


def _extract() -> list[tuple[str, str]]:
    """(name, text) pairs: every pydoc topic and every stdlib docstring of useful length."""
    from pydoc_data.topics import topics

    docs = [(f"topic:{name}", text) for name, text in topics.items()]
    root = sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("test"))
        for filename in sorted(filenames):
            if not filename.endswith(".py") or filename.startswith("test"):
                continue
            path = os.path.join(dirpath, filename)
            try:
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            module = os.path.relpath(path, root)
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    text = ast.get_docstring(node)
                    if text and len(text) >= MIN_DOC_CHARS:
                        name = getattr(node, "name", "<module>")
                        docs.append((f"{module}:{name}:{getattr(node, 'lineno', 0)}", text))
    # A hash order mixes topics and modules, so that --max-train-examples takes a fair sample.
    docs.sort(key=lambda d: (zlib.crc32(d[0].encode()), d[0]))
    return docs


def load_corpus() -> list[tuple[str, str]]:
    """The corpus, extracted once per Python version and cached (parsing the stdlib takes ~3 s)."""
    cache = _cache_path()
    if cache.exists():
        try:
            with gzip.open(cache, "rt", encoding="utf-8") as f:
                return [tuple(json.loads(line)) for line in f]
        except (OSError, ValueError, EOFError):
            pass  # a damaged cache is rebuilt below
    docs = _extract()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps(doc) + "\n")
        os.replace(tmp, cache)
    except OSError:
        pass  # no writable cache: extract again next time
    return docs


def is_validation(name: str) -> bool:
    return zlib.crc32(b"split:" + name.encode()) % 100 < VALIDATION_PERCENT


class InMemoryDocuments:
    """Documents held in a list (the default corpus is small)."""

    def __init__(self, texts: list[str]):
        self._texts = texts

    def iter_from(self, start: int) -> Iterator[str]:
        return iter(self._texts[start:])

    def __len__(self) -> int:
        return len(self._texts)


class DefaultCorpusSource:
    """Source ``builtin``: the embedded corpus, splits ``train`` and ``validation``."""

    name = "builtin"
    description = "Embedded corpus: CPython documentation (pydoc topics + stdlib docstrings)"
    SPLITS = ("train", "validation")

    def splits(self, request: SourceRequest) -> list[str]:
        return list(self.SPLITS)

    def open(self, request: SourceRequest) -> InMemoryDocuments:
        if request.location not in ("", "pydocs", "default"):
            raise DataError(
                f"unknown built-in corpus {request.location!r}; use --dataset-id builtin:pydocs "
                "or leave --dataset-id out"
            )
        split = {"val": "validation", "valid": "validation", "test": "validation"}.get(
            request.split, request.split
        )
        if split not in self.SPLITS:
            raise DataError(
                f"the embedded corpus has no split {request.split!r}; its splits are "
                f"{', '.join(self.SPLITS)}"
            )
        want_val = split == "validation"
        return InMemoryDocuments(
            [text for name, text in load_corpus() if is_validation(name) == want_val]
        )


@hookimpl
def register_data_sources(register):
    register(DefaultCorpusSource())
