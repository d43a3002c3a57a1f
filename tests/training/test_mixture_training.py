"""A weighted mixture of datasets, each with its own column and format: each exhaustion mode ends,
restarts or drops the short dataset. A run on it (each dataset's tokens logged, the realised
shares summarised, a kill -9 resume equal to the uninterrupted run): test_kill_9_resume.py."""

from __future__ import annotations

import json
from pathlib import Path

from tests.training.test_chat_training import _chat_file


def _mixture(tmp_path: Path, exhausted: str = "restart") -> Path:
    web = tmp_path / "web.jsonl"
    web.write_text("".join(json.dumps({"content": f"page {i}: " + "the web says hello. " * (
        1 + i % 4)}) + "\n" for i in range(300)))
    chat = _chat_file(tmp_path / "chat.jsonl", 80)
    config = tmp_path / "mix.toml"
    config.write_text(f"""\
mixture_exhausted = "{exhausted}"

[[dataset]]
id = "{web}"
text_column = "content"
weight = 3

[[dataset]]
id = "{chat}"
format = "chat"
weight = 1
""")
    return config


def _summary(out: Path) -> dict:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if '"summary"' in x][-1]


def test_each_exhaustion_mode_ends_restarts_or_drops_the_short_dataset(tmp_path):
    from kerastrain.config import RunConfig, build_run_config
    from kerastrain.data.preparation import open_data

    config = _mixture(tmp_path)
    values = {"data": {"datasets": [
        {"id": str(tmp_path / "web.jsonl"), "text_column": "content", "weight": 3},
        {"id": str(tmp_path / "chat.jsonl"), "format": "chat", "weight": 1}]}}
    assert config.exists()
    counts = {}
    for mode in ("end-epoch", "restart", "drop"):
        values["data"]["mixture_exhausted"] = mode
        run: RunConfig = build_run_config(values, None)
        data = open_data(run, say=lambda _: None)
        assert data.names == ["web", "chat"]
        drawn = [t for _, (t, _) in zip(range(2000), data.train.iter_from(0), strict=False)]
        counts[mode] = (len(drawn), drawn.count(0), drawn.count(1))
        assert data.val is None  # files have one split: no held-out data to mix
    # end-epoch: it ends when chat's 80 conversations are spent; restart never ends; drop reads
    # every document of both once.
    assert counts["end-epoch"][2] == 80 and counts["end-epoch"][0] < 380
    assert counts["restart"][0] == 2000 and abs(counts["restart"][1] / 2000 - 0.75) < 0.04
    assert counts["drop"] == (380, 300, 80)
