"""A hub dataset in the local Hugging Face cache is used when the hub cannot be reached."""

from __future__ import annotations

import json
import logging

import pytest

from kerastrain.errors import DataError
from kerastrain.sources import SourceRequest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_with_dataset(root, repo_id: str) -> None:
    """The layout ``hf download --repo-type dataset REPO`` leaves in ``HF_HUB_CACHE``."""
    repo = root / f"datasets--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    data = repo / "snapshots" / COMMIT / "data"
    data.mkdir(parents=True)
    for split, count in (("train", 12), ("validation", 3)):
        rows = "".join(json.dumps({"text": f"{split} document {i}"}) + "\n" for i in range(count))
        (data / f"{split}.jsonl").write_text(rows)


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # refused: no network
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "map"])
def test_unreachable_hub_uses_the_cached_dataset_with_a_notice(no_hub, caplog, streaming):
    from kerastrain_hf import source
    from kerastrain_hf.source import HFSource

    cache_with_dataset(no_hub, "someone/tiny-stories")
    source._NOTICED.clear()
    hf = HFSource()
    with caplog.at_level(logging.WARNING, logger="kerastrain.hf"):
        request = SourceRequest("someone/tiny-stories", split="train", streaming=streaming)
        assert hf.splits(request) == ["train", "validation"]
        train = hf.open(request)
        val = hf.open(SourceRequest("someone/tiny-stories", split="validation",
                                    streaming=streaming))
    assert list(train.iter_from(10)) == ["train document 10", "train document 11"]
    assert list(val.iter_from(0)) == [f"validation document {i}" for i in range(3)]
    notices = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(notices) == 1 and "using the local cache" in notices[0]
    assert "\n" not in notices[0]


def test_unreachable_hub_and_no_cached_copy_is_a_one_line_error(no_hub):
    from kerastrain_hf.source import HFSource

    with pytest.raises(DataError) as info:
        HFSource().open(SourceRequest("someone/not-cached", split="train"))
    message = info.value.format_message()
    assert message.startswith("could not reach the Hugging Face Hub")
    assert "local cache has no copy of it" in message and "\n" not in message
