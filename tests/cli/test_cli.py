"""The command line: help speed, plugin listing, and bad input as one line with exit code 2."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import TINY, invoke, kerastrain


def test_python_m_help_works():
    # How fast --help is depends on what it imports (the next test), not on a wall clock of a
    # shared machine.
    proc = subprocess.run([sys.executable, "-m", "kerastrain", "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0
    assert "run" in proc.stdout and "plugins" in proc.stdout
    assert proc.stderr == ""  # no warning or traceback on the way (imports: the next test)


def test_help_imports_no_heavy_library():
    code = ("import sys; from kerastrain.cli import cli\n"
            "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('keras', 'jax', 'datasets', 'boto3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_run_help_lists_every_seed_option():
    out = invoke("run", "--help").output
    for option in [
        "--dataset-id", "--text-column", "--dataset-config", "--split", "--val-split",
        "--max-train-examples", "--max-val-examples", "--auto-vocab-size", "--vocab-size",
        "--min-vocab-size", "--max-vocab-size", "--tokenizer-train-examples",
        "--retrain-tokenizer", "--tokenizer-path", "--model-preset", "--d-model", "--num-layers",
        "--num-heads", "--d-ff", "--seq-len", "--dropout-rate", "--activation", "--no-rmsnorm",
        "--no-swiglu", "--no-rope", "--use-lora", "--lora-rank", "--epochs", "--batch-size",
        "--gradient-accumulation-steps", "--learning-rate", "--weight-decay", "--warmup-steps",
        "--grad-clip", "--no-streaming", "--shuffle-buffer-size", "--stride",
        "--use-mixed-precision", "--output-dir", "--log-every", "--save-every", "--eval-every",
        "--resume-from", "--cloud-provider", "--cloud-bucket", "--cloud-region",
        "--cloud-prefix", "--azure-sas-token", "--azure-account-name",
    ]:
        assert option in out, option


def test_plugins_lists_builtins_as_json():
    rows = json.loads(invoke("plugins", "--json").output)
    by_name = {r["name"]: r for r in rows}
    assert "data source:builtin" in by_name["kerastrain.data.corpus"]["registers"]
    assert {"tokenizer:bpe", "tokenizer:bytes"} <= set(by_name["kerastrain.data.tokenizer"]["registers"])
    assert all(r["version"] for r in rows)
    assert any(r.startswith("preset:") for r in by_name["kerastrain.model.presets"]["registers"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "gigantic"], "unknown preset 'gigantic'"),
        (["--dataset-id", "nosuchsource:thing"], "no data source named 'nosuchsource'"),
        (["--cloud-provider", "dropbox", "--cloud-bucket", "b"], "dropbox"),
        (["--batch-size", "-4"], "--batch-size must be at least 1"),
        (["--d-model", "30", "--num-heads", "4"], "not divisible by --num-heads"),
        (["--seq-len", "1"], "--seq-len must be at least 2"),
        (["--dataset-id", "/no/such/dir/file.txt"], "/no/such/dir/file.txt"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("precious")
    proc = kerastrain("run", "--output-dir", str(out_dir), *TINY, *args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["keep.txt"]


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = kerastrain("run", "--output-dir", str(blocker / "sub"), *TINY, timeout=120)
    assert proc.returncode == 2
    assert "cannot write to output directory" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert blocker.read_text() == "not a directory"


def test_environment_variable_restricts_plugins():
    proc = kerastrain("plugins", "--json", env={"KERASTRAIN_LOAD_PLUGINS": ""})
    rows = json.loads(proc.stdout)
    assert all(r["builtin"] for r in rows)
    if os.environ.get("CI") is None:
        return
    full = json.loads(kerastrain("plugins", "--json").stdout)
    assert any(not r["builtin"] for r in full)


def test_a_run_that_cannot_fit_is_refused_with_the_plan(tmp_path):
    proc = kerastrain("run", "--output-dir", str(tmp_path / "o"), "--preset", "xlarge",
                      "--batch-size", "512", "--tokenizer", "bytes", "--max-steps", "1",
                      timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "needs about" in proc.stderr and "kerastrain plan" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_generate_ends_at_once_with_its_exit_code_and_its_message(tmp_path):
    """generate ends with os._exit (kerastrain.cli.main.ENDS_AT_ONCE): the refusal still reaches
    stderr, whole, with exit code 2."""
    proc = kerastrain("generate", str(tmp_path), "--prompt", "x", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "holds no checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
