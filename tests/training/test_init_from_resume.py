"""--init-from on an output directory that resumes: honoured when it is the run's own starting
point (the same command again), refused in one line otherwise, never silently dropped."""

from __future__ import annotations

from tests.helpers import TINY, invoke


def test_init_from_is_honoured_on_the_same_command_and_refused_otherwise(tmp_path):
    base = tmp_path / "base"
    assert invoke("run", "--output-dir", str(base), *TINY, "--max-steps", "2").exit_code == 0
    tuned = ["run", "--output-dir", str(tmp_path / "tuned"), *TINY,
             "--init-from", str(base / "final_checkpoint")]
    first = invoke(*tuned, "--max-steps", "2")
    assert first.exit_code == 0, first.output
    assert "Initialized weights from" in first.output
    again = invoke(*tuned, "--max-steps", "4")  # the same command, longer: it resumes
    assert again.exit_code == 0, again.output
    assert "Resuming from" in again.output.replace("\n", "")
    for other in (str(tmp_path / "not-a-model"), str(base / "best_checkpoint")):
        refused = invoke(*[a if a != str(base / "final_checkpoint") else other for a in tuned],
                         "--max-steps", "6")
        assert refused.exit_code == 2, refused.output
        assert f"--init-from {other} would be ignored" in refused.output.replace("\n", "")
        assert "already complete" not in refused.output


def test_init_from_a_kerastrain_checkpoint_keeps_its_tokenizer_on_new_data(tmp_path):
    """The checkpoint's weights mean its tokenizer's ids: a fine-tune on other data must not
    train a tokenizer of its own (same size, other ids: a silently wrong start)."""
    bpe = [*TINY, "--tokenizer", "bpe", "--vocab-size", "300"]
    base = tmp_path / "base"
    assert invoke("run", "--output-dir", str(base), *bpe, "--max-steps", "1").exit_code == 0
    texts = tmp_path / "other.txt"
    texts.write_text("".join(f"zebra quokka {i} xylophone narwhal\n" for i in range(300)))
    tuned = tmp_path / "tuned"
    result = invoke("run", "--output-dir", str(tuned), *bpe, "--max-steps", "1", "--dataset-id",
                    str(texts), "--init-from", str(base / "final_checkpoint"))
    assert result.exit_code == 0, result.output
    assert "Tokenizer: taken from the checkpoint" in result.output.replace("\n", " ")
    assert (tuned / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
