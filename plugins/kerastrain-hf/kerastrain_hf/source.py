"""The ``hf`` data source: Hugging Face hub datasets and local files through ``datasets``.

``SourceRequest.location`` is resolved in this order:

0. a URL (``s3://``, ``gs://``, ``az://``, ``https://``): the data files it names (a file, a glob
   or a prefix), listed through fsspec (:mod:`kerastrain_hf.remote`), one split ``train``;
1. a glob (``*``, ``?``, ``[``): the files it matches (sorted), one split ``train``;
2. an existing folder saved with ``save_to_disk``: loaded memory-mapped (``load_from_disk``);
3. another existing folder: ``load_dataset(folder)``, which finds splits and configs the way the
   hub does (``train*.jsonl``, ``test/``..., a README with ``configs:``);
4. an existing file: one split ``train``, builder from the extension;
5. something that looks like a path (``/``, ``./``, ``~``, a data-file extension): an error;
6. a hub id (``name`` or ``owner/name``): ``load_dataset(id, config, split=...)``, after a
   3-second probe of the hub so that no network fails fast instead of retrying for ~23 s.

``datasets`` is imported inside functions: this module is imported with the plugin manager.
"""

from __future__ import annotations

import ast
import glob
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from kerastrain.errors import DataError
from kerastrain.sources import Documents, SourceRequest
from kerastrain_hf.documents import DecodeCounter, MapDocuments, StreamDocuments
from kerastrain_hf.hub import (  # noqa: F401  (probe_hub, _NOTICED: used through this module)
    _NOTICED,
    LOCAL_HINT,
    HubUnreachable,
    cached_snapshot,
    hub_snapshot,
    probe_hub,
)
from kerastrain_hf.remote import is_url, list_files
from kerastrain_hf.remote import storage_options as url_storage_options
from kerastrain_hf.shards import ShardStream

BUILDERS = {"txt": "text", "text": "text", "json": "json", "jsonl": "json", "parquet": "parquet",
            "csv": "csv"}  # fmt: skip
TEXT_ENCODED = {"text", "json", "csv"}  # builders that decode bytes and take ``encoding_errors``
# Bytes the text and JSON-lines builders read at a time (``datasets`` default: 10 MiB). Streaming
# 100 MB of JSONL peaked 105 MiB above the start RSS with 10 MiB chunks, 58 MiB with 1 MiB, at
# the same speed: a chunk is copied several times (bytes, Arrow table, Python strings).
CHUNK_BYTES = 1 << 20
COMPRESSION = {"gz", "bz2", "xz", "zst", "zip", "lz4"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# Map-style preparation is cached under a key that includes ``encoding_errors``: a fixed handler
# name keeps that key stable from run to run.
_MAP_COUNTER: DecodeCounter | None = None
log = logging.getLogger("kerastrain.hf")


@dataclass
class Location:
    """What ``SourceRequest.location`` names."""

    kind: str  # "files", "saved", "folder", "hub" or "remote" (files named by URLs)
    path: str
    files: list[str] = field(default_factory=list)


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _extension(path: str) -> str:
    parts = os.path.basename(path).lower().split(".")
    if len(parts) > 2 and parts[-1] in COMPRESSION:
        return parts[-2]
    return parts[-1] if len(parts) > 1 else ""


def _looks_like_path(location: str) -> bool:
    return (
        location.startswith(("/", ".", "~"))
        or location.count("/") > 1
        or os.sep in location.replace("/", "")
        or _extension(location) in BUILDERS
    )


def resolve(location: str, settings: dict[str, str] | None = None) -> Location:
    """Tell what ``location`` names; a missing path or an empty glob is a :class:`DataError`.
    ``settings``: ``--data-option`` storage settings, for a URL."""
    if not location:
        raise DataError("the hf source needs --dataset-id (a hub id, a folder, files or a glob)")
    if is_url(location):
        return Location("remote", location, list_files(
            location, lambda f: _extension(f) in BUILDERS, settings))
    path = os.path.expanduser(location)
    if _has_glob(path):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise DataError(f"--dataset-id {location} matches no files")
        return Location("files", path, files)
    if os.path.isdir(path):
        saved = any(
            os.path.exists(os.path.join(path, name)) for name in ("dataset_dict.json", "state.json")
        )
        return Location("saved" if saved else "folder", path)
    if os.path.isfile(path):
        return Location("files", path, [path])
    if _looks_like_path(location) or not HUB_ID.match(location):
        raise DataError(f"--dataset-id {location}: no such file or folder")
    return Location("hub", location)


def _builder_for(files: list[str], location: str) -> str:
    kinds = {_extension(f) for f in files}
    unknown = sorted(k for k in kinds if k not in BUILDERS)
    if unknown:
        raise DataError(
            f"{location}: cannot read files ending .{unknown[0]}; use .txt, .json, .jsonl, "
            f".parquet or .csv"
        )
    builders = {BUILDERS[k] for k in kinds}
    if len(builders) > 1:
        raise DataError(f"{location} mixes file types ({', '.join(sorted(kinds))}); pick one")
    return builders.pop()


def _folder_builder(path: str) -> str | None:
    """The builder ``load_dataset`` will infer for a folder: its most common data extension.

    None when a README declares ``configs:``: builder keyword arguments (``encoding_errors``)
    would then replace the declared configs by a config without data files.
    """
    readme = os.path.join(path, "README.md")
    if os.path.isfile(readme):
        with open(readme, encoding="utf-8", errors="replace") as f:
            head = f.read(65536)
        if head.startswith("---") and re.search(r"^configs:", head, re.M):
            return None
    counts: dict[str, int] = {}
    for _root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            builder = BUILDERS.get(_extension(name))
            if builder and not name.startswith("."):
                counts[builder] = counts.get(builder, 0) + 1
    return max(counts, key=counts.get) if counts else None


def _listed(message: str) -> str:
    """The first ``[...]`` Python list in a ``datasets`` message, as ``a, b, c``."""
    match = re.search(r"\[[^\]]*\]", message)
    if not match:
        return "?"
    try:
        return ", ".join(str(x) for x in ast.literal_eval(match.group(0)))
    except (ValueError, SyntaxError):
        return match.group(0)


def translate(exc: BaseException, request: SourceRequest) -> DataError:
    """One actionable line for an exception raised by ``datasets``."""
    where = request.location
    message = str(exc)
    name = type(exc).__name__
    if "Config name is missing" in message:
        return DataError(
            f"{where} has several configs; choose one with --dataset-config: {_listed(message)}"
        )
    if "BuilderConfig" in message and "not found" in message:
        return DataError(
            f"{where} has no config {request.dataset_config!r}; configs: {_listed(message)}"
        )
    if "Bad split" in message or "Unknown split" in message:
        return DataError(f"{where} has no split {request.split!r}; splits: {_listed(message)}")
    if name in ("DatasetNotFoundError", "RepositoryNotFoundError"):
        return DataError(f"dataset {where} was not found on the Hugging Face Hub; {LOCAL_HINT}")
    if "Couldn't reach" in message or "OfflineModeIsEnabled" in message:
        return DataError(
            f"could not reach the Hugging Face Hub for {where} and it is not in the local cache; "
            f"{LOCAL_HINT}"
        )
    if name == "EmptyDatasetError" or isinstance(exc, StopIteration):
        return DataError(f"{where}: the dataset has no data files or is empty")
    first = message.strip().splitlines()[0] if message.strip() else name
    cause = exc.__cause__ or exc.__context__
    if name == "DatasetGenerationError" and cause is not None and str(cause).strip():
        first = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"  # the real reason
    return DataError(f"could not read {where} (split {request.split!r}): {first}")


def translate_file(exc: BaseException, label: str, file: str) -> DataError:
    """One line for an exception raised while reading one data file of a stream."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if type(exc).__name__ == "DatasetGenerationError" and cause is not None and str(cause).strip():
        message = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"
    return DataError(f"could not read {file} of {label}: {message}")


def hub_or_cache(location: Location) -> Location:
    """``location`` when the hub answers; its cached snapshot, read as a local folder with a
    one-line notice, when the hub cannot be reached and the dataset is in the local cache."""
    snapshot = hub_snapshot(location.path)
    return Location("folder", snapshot) if snapshot else location


def _saved_splits(path: str) -> list[str]:
    dict_file = os.path.join(path, "dataset_dict.json")
    if os.path.exists(dict_file):
        with open(dict_file) as f:
            return list(json.load(f)["splits"])
    with open(os.path.join(path, "state.json")) as f:
        return [json.load(f).get("_split") or "train"]


def _check_nonempty_files(files: list[str], location: str) -> None:
    if all(os.path.getsize(f) == 0 for f in files):
        raise DataError(f"{location}: the dataset is empty (every file has 0 bytes)")


def _columns_and_type(dataset: Any, request: SourceRequest, streaming: bool) -> None:
    """Refuse a missing text column (listing those that exist) or an empty dataset."""
    from kerastrain_hf.documents import check_text_type

    column = request.text_column
    if streaming:
        first = next(iter(dataset.with_format("arrow").iter(batch_size=1)), None)
        if first is None:
            raise DataError(f"{request.location}: split {request.split!r} is empty")
        schema = first.schema
        columns = schema.names
        arrow_type = schema.field(column).type if column in columns else None
    else:
        if len(dataset) == 0:
            raise DataError(f"{request.location}: split {request.split!r} is empty")
        columns = dataset.column_names
        arrow_type = dataset.features.arrow_schema.field(column).type if column in columns else None
    if arrow_type is None:
        raise DataError(
            f"{request.location} has no column {column!r}; columns: {', '.join(columns)} "
            f"(choose one with --text-column)"
        )
    check_text_type(arrow_type, column)


def _records(dataset: Any, request: SourceRequest) -> Documents:
    """Whole records (``SourceRequest.records``): the data format checks their columns."""
    from kerastrain_hf.documents import RecordDocuments

    docs = RecordDocuments(dataset, request.location)
    if next(docs.iter_from(0), None) is None:
        raise DataError(f"{request.location}: split {request.split!r} is empty")
    return docs


class HFSource:
    """Hugging Face datasets: hub ids, local folders, files and globs (``--dataset-id``)."""

    name = "hf"
    description = "Hugging Face hub datasets and local .txt/.json/.jsonl/.parquet/.csv files"

    def open(self, request: SourceRequest) -> Documents:
        location = resolve(request.location, request.storage_options)
        if location.kind == "saved":
            return self._open_saved(location, request)
        if location.kind == "hub":
            location = hub_or_cache(location)
        return self._open_loaded(location, request)

    def splits(self, request: SourceRequest) -> list[str] | None:
        location = resolve(request.location, request.storage_options)
        if location.kind in ("files", "remote"):
            return ["train"]
        if location.kind == "saved":
            return _saved_splits(location.path)
        if location.kind == "hub":
            location = hub_or_cache(location)
        import datasets

        try:
            return list(datasets.get_dataset_split_names(location.path, request.dataset_config))
        except Exception as exc:
            raise translate(exc, request) from exc

    def _open_saved(self, location: Location, request: SourceRequest) -> Documents:
        import datasets

        available = _saved_splits(location.path)
        if request.split not in available:
            raise DataError(
                f"{request.location} has no split {request.split!r}; splits: {', '.join(available)}"
            )
        loaded = datasets.load_from_disk(location.path)
        dataset = loaded[request.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        if request.records:
            return _records(dataset, request)
        # Saved datasets are memory-mapped Arrow: map-style costs no memory, so we always use it.
        _columns_and_type(dataset, request, streaming=False)
        docs = MapDocuments(dataset, request.text_column, request.location, DecodeCounter())
        return self._nonempty(docs, request)

    def _open_loaded(self, location: Location, request: SourceRequest) -> Documents:
        import datasets

        global _MAP_COUNTER
        kwargs: dict[str, Any] = {"split": request.split, "streaming": request.streaming}
        builder = None
        if location.kind in ("files", "remote"):
            builder = _builder_for(location.files, request.location)
            if request.split != "train":
                raise DataError(
                    f"{request.location} has no split {request.split!r}; files and globs form "
                    f"one split: train"
                )
            if location.kind == "files":
                _check_nonempty_files(location.files, request.location)
            else:
                kwargs["storage_options"] = url_storage_options(location.files[0],
                                                                 request.storage_options)
            args: tuple = (builder,)
            kwargs["data_files"] = location.files
            kwargs["split"] = "train"
        else:
            if location.kind == "folder":
                builder = _folder_builder(location.path)
            args = (location.path, request.dataset_config)
        # Streams get their own counter; map-style preparation shares one fixed name (see above).
        counter = DecodeCounter()
        prepare = counter
        if builder in TEXT_ENCODED:
            if not request.streaming:
                _MAP_COUNTER = _MAP_COUNTER or DecodeCounter("kerastrain_hf_replace")
                prepare = _MAP_COUNTER
            kwargs["encoding_errors"] = prepare.name
        if builder in ("text", "json"):
            kwargs["chunksize"] = CHUNK_BYTES
        if request.streaming and location.kind in ("files", "remote"):
            return self._open_shards(location, request, builder, counter, kwargs)
        before = prepare.count
        try:
            dataset = datasets.load_dataset(*args, **kwargs)
            if request.records:
                return _records(dataset, request)
            _columns_and_type(dataset, request, request.streaming)
        except DataError:
            raise
        except Exception as exc:
            raise translate(exc, request) from exc
        if request.streaming:
            stream = StreamDocuments(dataset, request.text_column, request.location, counter)
            if stream.is_empty():
                raise DataError(
                    f"{request.location}: split {request.split!r} has no text in column "
                    f"{request.text_column!r}"
                )
            counter.count = 0  # bytes replaced by the checks above are counted again when read
            return stream
        docs = MapDocuments(dataset, request.text_column, request.location, counter)
        docs.prepared_errors = prepare.count - before
        docs.report(docs.prepared_errors)
        return self._nonempty(docs, request)

    @staticmethod
    def _open_shards(location: Location, request: SourceRequest, builder: str,
                     counter: DecodeCounter, kwargs: dict[str, Any]) -> ShardStream:
        """Data files streamed one at a time, resumable by position (:mod:`kerastrain_hf.shards`)."""
        load = {k: v for k, v in kwargs.items() if k in ("encoding_errors", "chunksize")}
        column = None if request.records else request.text_column
        stream = ShardStream(location.files, builder, column, request.location, counter, load,
                             request.storage_options)
        if stream.is_empty():
            if request.records:
                raise DataError(f"{request.location}: split {request.split!r} is empty")
            raise DataError(
                f"{request.location}: split {request.split!r} has no text in column "
                f"{request.text_column!r}"
            )
        counter.count = 0  # bytes replaced by the check above are counted again when read
        return stream

    @staticmethod
    def _nonempty(docs: MapDocuments, request: SourceRequest) -> MapDocuments:
        if len(docs) == 0:
            raise DataError(
                f"{request.location}: split {request.split!r} has no text in column "
                f"{request.text_column!r}"
            )
        return docs
