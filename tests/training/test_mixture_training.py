"""``kerastrain run`` on a weighted mixture of datasets, each with its own column and format:
a kill -9 resume matches the uninterrupted run (losses, weights, tokens from each dataset), the
metrics log each dataset's tokens and the summary gives the realised shares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import TINY, invoke
from tests.training.test_chat_training import _chat_file
from tests.training.test_training import _metrics, resume_after_kill_9


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


@pytest.mark.slow
def test_a_mixture_kill_9_then_resume_matches_uninterrupted(tmp_path):
    config = _mixture(tmp_path)
    args = [*TINY, "--config", str(config), "--seq-len", "128", "--max-steps", "12",
            "--save-every", "4", "--log-every", "1", "--eval-every", "1000",
            "--shuffle-buffer-size", "30", "--window-shuffle-size", "0"]
    a = tmp_path / "a"
    done = invoke("run", "--output-dir", str(a), *args)
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "a mixture of 2 datasets (restart when one runs out): web 75%" in said
    train = _metrics(a)
    assert all(r["tokens_from_web"] > 0 and r["tokens_from_chat"] > 0 for r in train)
    assert "dropped" not in said.split("Done:")[-1] or " 0 dropped" in said
    shares = _summary(a)["mixture_shares"]
    assert set(shares) == {"web", "chat"}
    assert shares["web"]["documents"] + shares["chat"]["documents"] == pytest.approx(1, abs=1e-3)
    assert abs(shares["web"]["documents"] - 0.75) < 0.1  # the weights set documents' shares
    assert "Mixture, realised shares of documents (tokens): web " in said
    b = tmp_path / "b"
    resume_after_kill_9(a, b, args, 5, 8)
    by_step = {r["step"]: r for r in _metrics(a)}
    for r in _metrics(b):
        if r["step"] >= 5:
            want = by_step[r["step"]]
            assert (r["tokens_from_web"], r["tokens_from_chat"], r["trained_tokens"]) == (
                want["tokens_from_web"], want["tokens_from_chat"], want["trained_tokens"])
            assert r["loss"] == pytest.approx(want["loss"], rel=1e-6), r["step"]
    assert _summary(b)["mixture_shares"] == shares


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
