"""kill -9 then the same command: the resumed run equals the uninterrupted one, whatever the data.

One test over its cases (plain text between checkpoints, chat data with gradient accumulation, a
weighted mixture of datasets, DPO on preference pairs from an SFT checkpoint): the uninterrupted run ``a``, the same command in ``b`` killed with
SIGKILL between two checkpoints and run again, then ``b``'s final weights equal ``a``'s, every step
is logged once, and every step's record equals ``a``'s (loss, and each case's token counts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY, invoke, kill_9_at_step
from tests.training.test_chat_training import _chat_file
from tests.training.test_mixture_training import _mixture, _summary
from tests.training.test_training import _metrics, _weights

SAVES = ["--log-every", "1", "--eval-every", "1000"]


def _said(output: str) -> str:
    return " ".join(output.split())


def _chat_is_trained_on_replies(said: str, a: Path, b: Path) -> None:
    assert "Data format: chat, from the first record's columns" in said
    assert all(0 < r["trained_tokens"] < 4 * 128 * 2 / 3 for r in _metrics(a))  # not the prompts


def _mixture_reports_its_shares(said: str, a: Path, b: Path) -> None:
    assert "a mixture of 2 datasets (restart when one runs out): web 75%" in said
    assert all(r["tokens_from_web"] > 0 and r["tokens_from_chat"] > 0 for r in _metrics(a))
    assert "dropped" not in said.split("Done:")[-1] or " 0 dropped" in said
    shares = _summary(a)["mixture_shares"]
    assert set(shares) == {"web", "chat"}
    assert shares["web"]["documents"] + shares["chat"]["documents"] == pytest.approx(1, abs=1e-3)
    assert abs(shares["web"]["documents"] - 0.75) < 0.1  # the weights set documents' shares
    assert "Mixture, realised shares of documents (tokens): web " in said
    assert _summary(b)["mixture_shares"] == shares


def _dpo(tmp: Path) -> list[str]:
    """DPO from a 3-step SFT run: the resumed run's reference is still the --init-from model
    (reloaded, not the resumed weights)."""
    from tests.training.test_preference_run import preference_file, sft_file

    sft = tmp / "sft"
    done = invoke("run", "--output-dir", str(sft), *TINY, "--dropout-rate", "0",
                  "--dataset-id", str(sft_file(tmp / "sft.jsonl")), "--max-steps", "3")
    assert done.exit_code == 0, done.output
    return [*TINY, "--dropout-rate", "0", "--dataset-id", str(preference_file(tmp / "pref.jsonl")),
            "--objective", "dpo", "--init-from", str(sft / "final_checkpoint"), "--max-steps",
            "8", "--save-every", "3", "--shuffle-buffer-size", "20", *SAVES]


def _dpo_starts_at_log_2(said: str, a: Path, b: Path) -> None:
    import math

    assert _metrics(a)[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference


@dataclass
class Case:
    args: Callable[[Path], list[str]]  # the run's options, given the test's folder
    kill_at: int  # killed once this step is logged, before step `before`
    before: int
    same: tuple[str, ...] = ()  # record fields equal step for step (the loss always is)
    resumes_from: str | None = None  # the checkpoint the resume names
    delay: str = "0.3"  # seconds the toy plugin adds to each step
    check: Callable[[str, Path, Path], None] | None = None  # (a's output, a, b)


CASES = {
    "text-between-checkpoints": Case(
        lambda tmp: [*TINY, "--dropout-rate", "0.1", "--max-steps", "40", "--save-every", "10",
                     "--shuffle-buffer-size", "50", *SAVES],
        kill_at=24, before=30, resumes_from="checkpoint_step_20", delay="0.15"),
    "chat-accumulated": Case(
        lambda tmp: [*TINY, "--dataset-id", str(_chat_file(tmp / "chat.jsonl")), "--seq-len",
                     "128", "--dropout-rate", "0.1", "--max-steps", "12", "--save-every", "4",
                     "--shuffle-buffer-size", "30", "--gradient-accumulation-steps", "2", *SAVES],
        kill_at=5, before=8, same=("trained_tokens",), check=_chat_is_trained_on_replies),
    "mixture": Case(
        lambda tmp: [*TINY, "--config", str(_mixture(tmp)), "--seq-len", "128", "--max-steps",
                     "12", "--save-every", "4", "--shuffle-buffer-size", "30",
                     "--window-shuffle-size", "0", *SAVES],
        kill_at=5, before=8, same=("tokens_from_web", "tokens_from_chat", "trained_tokens"),
        check=_mixture_reports_its_shares),
    "dpo": Case(_dpo, kill_at=4, before=6,
                same=("rewards/chosen", "rewards/accuracies", "logps/rejected"),
                check=_dpo_starts_at_log_2),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_kill_9_then_the_same_command_matches_the_uninterrupted_run(tmp_path, name):
    case = CASES[name]
    args = case.args(tmp_path)
    steps = int(args[args.index("--max-steps") + 1])
    a, b = tmp_path / "a", tmp_path / "b"
    done = invoke("run", "--output-dir", str(a), *args)  # in-process where no kill is needed
    assert done.exit_code == 0, done.output

    killed_at = kill_9_at_step(b, args, case.kill_at, delay=case.delay)
    assert case.kill_at <= killed_at < case.before, killed_at
    assert not (b / f"checkpoint_step_{case.before}").exists()
    assert not (b / "final_checkpoint").exists()
    resumed = invoke("run", "--output-dir", str(b), *args)
    assert resumed.exit_code == 0, resumed.output
    if case.resumes_from:
        assert case.resumes_from in resumed.output.replace("\n", "")  # rich wraps inside paths

    for wa, wb in zip(_weights(a / "final_checkpoint"), _weights(b / "final_checkpoint"),
                      strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)
    want = {r["step"]: r for r in _metrics(a)}
    got = {r["step"]: r for r in _metrics(b)}
    assert sorted(got) == list(range(1, steps + 1))  # steps after the checkpoint logged once
    for step, record in got.items():
        assert record["loss"] == pytest.approx(want[step]["loss"], rel=1e-6), step
        assert [record[k] for k in case.same] == [want[step][k] for k in case.same], step
    if case.check is not None:
        case.check(_said(done.output), a, b)
    assert json.loads((b / "final_checkpoint" / "state.json").read_text())["step"] == steps
