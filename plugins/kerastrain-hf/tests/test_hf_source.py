"""The ``hf`` data source on local data made here: formats, layouts, resume, bad input."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import time

import pytest

from kerastrain.data.sources import Documents, SourceRequest
from kerastrain.errors import DataError

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from kerastrain_hf import HFSource, documents  # noqa: E402

DOCS = [f"document {i}: the cat sat on mat number {i}." for i in range(40)]


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    """Map-style loads prepare an Arrow cache: keep it out of the user's ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    datasets.disable_progress_bars()


def write(path, docs, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "txt":
        path.write_text("".join(d + "\n" for d in docs), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text(
            "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs))
        )
    elif fmt == "json":
        path.write_text(json.dumps([{"text": d, "id": i} for i, d in enumerate(docs)]))
    elif fmt == "csv":
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text"])
            writer.writerows([i, d] for i, d in enumerate(docs))
    elif fmt == "parquet":
        pq.write_table(pa.table({"text": docs, "id": list(range(len(docs)))}), path)
    return path


def open_docs(location, **kwargs) -> Documents:
    return HFSource().open(SourceRequest(str(location), **kwargs))


def error_of(location, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        open_docs(location, **kwargs)
    message = info.value.format_message()
    assert "\n" not in message
    return message


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "map"])
@pytest.mark.parametrize("fmt", ["txt", "jsonl", "json", "csv", "parquet"])
def test_every_format_reads_all_documents_and_resumes(tmp_path, fmt, streaming):
    docs = open_docs(write(tmp_path / f"data.{fmt}", DOCS, fmt), streaming=streaming)
    assert isinstance(docs, Documents)
    assert list(docs.iter_from(0)) == DOCS
    assert list(docs.iter_from(17)) == DOCS[17:]
    assert list(docs.iter_from(len(DOCS))) == []
    if streaming:
        with pytest.raises(TypeError):
            len(docs)
    else:
        assert len(docs) == len(DOCS)


def test_glob_reads_matching_files_in_sorted_order(tmp_path):
    write(tmp_path / "b.jsonl", DOCS[20:], "jsonl")
    write(tmp_path / "a.jsonl", DOCS[:20], "jsonl")
    write(tmp_path / "c.txt", ["not matched"], "txt")
    docs = open_docs(tmp_path / "*.jsonl")
    assert list(docs.iter_from(0)) == DOCS
    assert HFSource().splits(SourceRequest(str(tmp_path / "*.jsonl"))) == ["train"]


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "map"])
def test_folder_of_data_files_has_splits(tmp_path, streaming):
    write(tmp_path / "ds" / "train.jsonl", DOCS[:30], "jsonl")
    write(tmp_path / "ds" / "test.jsonl", DOCS[30:], "jsonl")
    folder = tmp_path / "ds"
    assert list(open_docs(folder, streaming=streaming).iter_from(0)) == DOCS[:30]
    test = open_docs(folder, split="test", streaming=streaming)
    assert list(test.iter_from(0)) == DOCS[30:]
    assert sorted(HFSource().splits(SourceRequest(str(folder)))) == ["test", "train"]
    message = error_of(folder, split="valid", streaming=streaming)
    assert "no split 'valid'" in message and "train" in message and "test" in message


def test_folder_of_text_files(tmp_path):
    write(tmp_path / "txt" / "part1.txt", DOCS[:10], "txt")
    write(tmp_path / "txt" / "part2.txt", DOCS[10:], "txt")
    assert list(open_docs(tmp_path / "txt").iter_from(0)) == DOCS


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    one = datasets.Dataset.from_dict({"text": DOCS})
    one.save_to_disk(str(tmp_path / "one"))
    docs = open_docs(tmp_path / "one")
    assert len(docs) == len(DOCS) and list(docs.iter_from(5)) == DOCS[5:]
    both = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"text": DOCS[:30]}),
        validation=datasets.Dataset.from_dict({"text": DOCS[30:]}),
    )
    both.save_to_disk(str(tmp_path / "both"))
    assert list(open_docs(tmp_path / "both", split="validation").iter_from(0)) == DOCS[30:]
    assert HFSource().splits(SourceRequest(str(tmp_path / "both"))) == ["train", "validation"]
    assert "splits: train, validation" in error_of(tmp_path / "both", split="test")


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "map"])
def test_iter_from_is_exact_across_batches_and_skips_null_and_empty(
    tmp_path, monkeypatch, streaming
):
    monkeypatch.setattr(documents, "BATCH_ROWS", 7)  # many batch boundaries in a small file
    rows = []
    for i in range(100):
        rows.append({"text": None if i % 9 == 0 else ("" if i % 13 == 0 else f"doc {i}")})
    path = tmp_path / "holes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected = [r["text"] for r in rows if r["text"]]
    docs = open_docs(path, streaming=streaming)
    for start in (0, 1, 6, 7, 8, 40, len(expected) - 1, len(expected)):
        first = list(docs.iter_from(start))
        assert first == expected[start:]
        assert list(docs.iter_from(start)) == first  # same documents on every call
    if not streaming:
        assert len(docs) == len(expected)


def test_resume_mid_stream_matches_an_uninterrupted_read(tmp_path):
    docs = open_docs(write(tmp_path / "d.parquet", DOCS, "parquet"))
    head = list(itertools.islice(docs.iter_from(0), 11))
    assert head + list(docs.iter_from(11)) == DOCS


def test_missing_text_column_lists_columns(tmp_path):
    path = write(tmp_path / "d.jsonl", DOCS, "jsonl")
    for streaming in (True, False):
        message = error_of(path, text_column="body", streaming=streaming)
        assert "no column 'body'" in message and "columns: text, id" in message


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "map"])
def test_non_string_column_is_refused(tmp_path, streaming):
    path = write(tmp_path / "d.jsonl", DOCS, "jsonl")
    message = error_of(path, text_column="id", streaming=streaming)
    assert "column 'id' holds int64 values, not text" in message


@pytest.mark.parametrize("fmt", ["txt", "jsonl"])
def test_empty_file_is_an_error(tmp_path, fmt):
    path = tmp_path / f"empty.{fmt}"
    path.write_text("")
    assert "empty" in error_of(path)


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "map"])
def test_split_without_any_text_is_an_error(tmp_path, streaming):
    path = tmp_path / "blank.jsonl"
    path.write_text('{"text": ""}\n{"text": null}\n')
    assert "has no text in column 'text'" in error_of(path, streaming=streaming)


def test_missing_path_and_empty_glob(tmp_path):
    assert "no such file or folder" in error_of(tmp_path / "nope.jsonl")
    assert "no such file or folder" in error_of("./relative/missing")
    assert "matches no files" in error_of(tmp_path / "*.parquet")


def test_files_form_only_a_train_split(tmp_path):
    path = write(tmp_path / "d.txt", DOCS, "txt")
    assert "no split 'validation'" in error_of(path, split="validation")


def test_unknown_extension_and_mixed_types(tmp_path):
    (tmp_path / "d.xml").write_text("<a/>")
    assert "cannot read files ending .xml" in error_of(tmp_path / "d.xml")
    write(tmp_path / "m" / "a.txt", DOCS, "txt")
    write(tmp_path / "m" / "b.jsonl", DOCS, "jsonl")
    assert "mixes file types" in error_of(tmp_path / "m" / "*")


def test_config_required_and_unknown_config(tmp_path):
    root = tmp_path / "cfg"
    write(root / "a" / "train.jsonl", DOCS[:5], "jsonl")
    write(root / "b" / "train.jsonl", DOCS[5:], "jsonl")
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: alpha\n  data_files: a/*.jsonl\n"
        "- config_name: beta\n  data_files: b/*.jsonl\n---\n"
    )
    message = error_of(root)
    assert "--dataset-config" in message and "alpha, beta" in message
    assert "no config 'gamma'; configs: alpha, beta" in error_of(root, dataset_config="gamma")
    assert list(open_docs(root, dataset_config="beta").iter_from(0)) == DOCS[5:]


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "map"])
def test_invalid_utf8_is_replaced_counted_and_reported_once(tmp_path, caplog, streaming):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good line\nbad \xff\xfe line\nalso \xc3 bad\nfine\n")
    with caplog.at_level(logging.WARNING, logger="kerastrain.hf"):
        docs = open_docs(path, streaming=streaming)
        first = list(docs.iter_from(0))
        assert list(docs.iter_from(0)) == first
    assert first == ["good line", "bad \ufffd\ufffd line", "also \ufffd bad", "fine"]
    assert docs.decode_errors == 3 * (2 if streaming else 1)  # a stream is decoded on each pass
    reports = [r.getMessage() for r in caplog.records if "invalid UTF-8" in r.getMessage()]
    assert reports == [f"{path}: replaced 3 invalid UTF-8 byte(s) with U+FFFD"]


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "map"])
@pytest.mark.parametrize(
    "name, raw",
    [
        ("bad.jsonl", b'{"text": "ok"}\n{"text": "bad \xff"}\n'),
        ("bad.csv", b"id,text\n1,ok\n2,bad \xff\n"),
    ],
)
def test_invalid_utf8_in_jsonl_and_csv_is_replaced(tmp_path, name, raw, streaming):
    path = tmp_path / name
    path.write_bytes(raw)
    docs = open_docs(path, streaming=streaming)
    assert list(docs.iter_from(0)) == ["ok", "bad \ufffd"]
    assert docs.decode_errors == 1


def test_hub_id_fails_fast_without_network(monkeypatch):
    from huggingface_hub import constants

    # A refused port stands for "no network" even on a machine that has one.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", "/nonexistent-hf-cache")  # no cached copy
    started = time.monotonic()
    message = error_of("roneneldan/TinyStories")
    assert time.monotonic() - started < 10
    assert message.startswith("could not reach the Hugging Face Hub")
    assert "--dataset-id path/to/*.jsonl" in message


def test_hub_probe_times_out_quickly(monkeypatch):
    import socket

    from huggingface_hub import constants
    from kerastrain_hf import source

    # A server that accepts connections and never answers: the probe must give up by itself.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        started = time.monotonic()
        with pytest.raises(DataError, match="could not reach the Hugging Face Hub"):
            source.probe_hub("roneneldan/TinyStories", timeout=1.0)
        assert time.monotonic() - started < 5
    finally:
        silent.close()


def test_hub_probe_answer_from_something_else_is_not_a_missing_dataset(monkeypatch):
    import http.server
    import threading

    from huggingface_hub import constants
    from kerastrain_hf import source

    class NotTheHub(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            if "missing" in self.path:
                self.send_header("X-Error-Code", "RepoNotFound")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotTheHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(DataError, match="could not reach the Hugging Face Hub"):
            source.probe_hub("owner/name")
        with pytest.raises(DataError, match="owner/missing was not found on the Hugging Face Hub"):
            source.probe_hub("owner/missing")
    finally:
        server.shutdown()


def test_registered_through_the_plugin_hook():
    import kerastrain_hf

    found = []
    kerastrain_hf.register_data_sources(register=found.append)
    assert [s.name for s in found] == ["hf"]
