"""The ``tfds`` data source: a tiny array_record dataset prepared here, read back without TF."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from kerastrain.data.sources import Documents, SourceRequest
from kerastrain.errors import DataError
from kerastrain.testing import TINY_RUN_ARGS as TINY
from kerastrain.testing import run_command as kerastrain

tfds = pytest.importorskip("tensorflow_datasets")

from kerastrain_tfds import TFDSSource, source  # noqa: E402

TRAIN = [f"train document {i} \u00e9t\u00e9" for i in range(40)] + ["", "bad \xff byte"]
TEST = [f"test document {i}" for i in range(5)]


def _builder_class():
    # Defined without registration, as in a fresh `kerastrain run` process where no code knows
    # the dataset: the source must find it from the files in the data dir alone.
    with tfds.core.registered.skip_registration():

        class TinyText(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")
            BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="small")]
            # TFDS looks for checksum files beside the builder's module through the
            # `importlib_resources` backport, which is not installed; there are none to find.
            code_path = None

            def _info(self):
                features = tfds.features.FeaturesDict({"text": tfds.features.Text(), "n": np.int32})
                return tfds.core.DatasetInfo(builder=self, features=features)

            def _split_generators(self, dl_manager):
                return {
                    "train": self._generate_examples(TRAIN),
                    "test": self._generate_examples(TEST),
                }

            def _generate_examples(self, texts):
                for i, text in enumerate(texts):
                    # Text features take bytes as they are: this is how invalid UTF-8 gets in.
                    raw = text.encode("utf-8").replace("\xff".encode(), b"\xff")
                    yield i, {"text": raw, "n": i}

    return TinyText


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    tfds.disable_progress_bar()
    builder = _builder_class()(data_dir=str(root), config="small", file_format="array_record")
    builder.download_and_prepare()
    return str(root)


def open_docs(location, data_dir, **kwargs) -> Documents:
    return TFDSSource().open(SourceRequest(location, data_dir=data_dir, **kwargs))


def error_of(location, data_dir, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        open_docs(location, data_dir, **kwargs)
    message = info.value.format_message()
    assert "\n" not in message
    return message


def test_round_trip_reads_every_document(data_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="kerastrain.tfds"):
        docs = open_docs("tiny_text/small:1.0.0", data_dir)
        got = list(docs.iter_from(0))
    assert isinstance(docs, Documents)
    assert len(docs) == len(TRAIN)
    # TFDS shuffles records when it prepares them; the set is the same, "\xff" was replaced.
    expected = [t.replace("\xff", "\ufffd") for t in TRAIN]
    assert sorted(got) == sorted(expected)
    assert docs.decode_errors == 1
    assert [r.getMessage() for r in caplog.records] == [
        "tfds:tiny_text/small:1.0.0: replaced 1 invalid UTF-8 byte(s) with U+FFFD"
    ]


def test_iter_from_is_exact_and_repeatable(data_dir, monkeypatch):
    monkeypatch.setattr(source, "BATCH_RECORDS", 7)
    docs = open_docs("tiny_text", data_dir)
    whole = list(docs.iter_from(0))
    for start in (0, 1, 7, 13, len(whole) - 1, len(whole)):
        assert list(docs.iter_from(start)) == whole[start:]
        assert list(docs.iter_from(start)) == whole[start:]


def test_other_split_and_split_slices(data_dir):
    assert sorted(open_docs("tiny_text/small", data_dir, split="test").iter_from(0)) == TEST
    assert len(open_docs("tiny_text/small", data_dir, split="train[:10]")) == 10
    request = SourceRequest("tiny_text/small", data_dir=data_dir)
    assert sorted(TFDSSource().splits(request)) == ["test", "train"]


def test_prepared_folder_path(data_dir):
    folder = f"{data_dir}/tiny_text/small/1.0.0"
    assert len(open_docs(folder, None, split="test")) == len(TEST)


def test_unknown_split_lists_splits(data_dir):
    message = error_of("tiny_text", data_dir, split="validation")
    assert "no split 'validation'" in message and "train" in message and "test" in message


def test_missing_and_non_text_feature(data_dir):
    assert "features: n, text" in error_of("tiny_text", data_dir, text_column="body")
    assert "not text" in error_of("tiny_text", data_dir, text_column="n")


def test_unknown_dataset_or_version(data_dir):
    message = error_of("no_such_set", data_dir)
    assert "'no_such_set' is not prepared in" in message
    message = error_of("tiny_text/small:9.0.0", data_dir)
    assert "prepared there: small/1.0.0" in message


def test_known_but_unprepared_dataset_is_not_downloaded(tmp_path):
    message = error_of("imdb_reviews", str(tmp_path))
    assert "is not prepared in" in message and "--file_format array_record" in message


def test_empty_name(data_dir):
    assert "needs a dataset name" in error_of("", data_dir)


def test_registered_through_the_plugin_hook():
    import kerastrain_tfds

    found = []
    kerastrain_tfds.register_data_sources(register=found.append)
    assert [s.name for s in found] == ["tfds"]


@pytest.mark.slow
def test_tfds_dataset_trains(tmp_path):
    import tensorflow_datasets as tfds

    data_dir = tmp_path / "tfds"
    tfds.disable_progress_bar()
    _builder_class()(data_dir=str(data_dir), config="small",
                     file_format="array_record").download_and_prepare()
    out = tmp_path / "out"
    proc = kerastrain("run", "--output-dir", str(out), *TINY, "--dataset-id", "tfds:tiny_text",
                      "--data-dir", str(data_dir), "--val-split", "test", "--max-steps", "4",
                      "--log-every", "2", "--batch-size", "2", "--seq-len", "16")
    assert proc.returncode == 0, proc.stderr
    assert "source 'tfds'" in proc.stdout
    assert (out / "final_checkpoint" / "manifest.json").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "eval" for r in records)
