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
