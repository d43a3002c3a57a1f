"""`kerastrain run` end to end on tiny models: real data, real steps, real files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import TINY, invoke, kerastrain

TOY = str(Path(__file__).parent.parent / "toy_plugin")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_default_corpus_run_trains_and_writes_output_dir(tmp_path):
    out = tmp_path / "out"
    proc = kerastrain("run", "--output-dir", str(out), *TINY, "--tokenizer", "bpe",
                      "--vocab-size", "400", "--tokenizer-train-examples", "300",
                      "--max-steps", "40", "--log-every", "5", "--eval-every", "20",
                      "--save-every", "20")
    assert proc.returncode == 0, proc.stderr
    assert "embedded default corpus" in proc.stdout
    for name in ("tokenizer.json", "model_config.json", "run_config.json", "metrics.jsonl",
                 "final_checkpoint/manifest.json", "best_checkpoint/manifest.json",
                 "checkpoint_step_20/manifest.json"):
        assert (out / name).exists(), name
    train = [m for m in metrics(out) if m["kind"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    assert json.loads((out / "model_config.json").read_text())["vocab_size"] <= 400
    assert list((out / "tensorboard").iterdir())
    # The same command again resumes (here: finds the run complete) and says so.
    again = kerastrain("run", "--output-dir", str(out), *TINY, "--tokenizer", "bpe",
                       "--vocab-size", "400", "--max-steps", "40")
    assert again.returncode == 0, again.stderr
    assert "Resuming from" in again.stdout and "already complete" in again.stdout
    assert "reusing" in again.stdout


def test_the_train_step_is_traced_once(tmp_path, caplog):
    """The state goes into the step as it comes out of it (one device is a mesh of one), and the
    step compiled ahead of the first batch (on an empty micro-batch shaped as the data's) is the
    one the first update calls: the step is traced and lowered once per run (a second trace at
    the second step cost 0.6-0.8 s of every nano run)."""
    import logging

    import jax

    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles():
        result = invoke("run", "--output-dir", str(tmp_path / "out"), *TINY, "--max-steps", "4",
                        "--eval-every", "1000")
    assert result.exit_code == 0, result.output
    traced = [r for r in caplog.records
              if r.getMessage().startswith("Finished tracing train_step for jit")]
    assert len(traced) == 1, [r.getMessage() for r in traced]


def test_third_party_plugin_distribution_is_used(tmp_path):
    env = {"PYTHONPATH": TOY + os.pathsep + os.environ.get("PYTHONPATH", "")}
    listed = json.loads(kerastrain("plugins", "--json", env=env).stdout)
    toy = next(r for r in listed if r["name"] == "toy")
    assert toy["distribution"] == "kerastrain-toy" and toy["version"] == "0.1.0"
    assert toy["registers"] == ["data source:toy"]
    assert kerastrain("toy-hello", env=env).stdout.strip() == "hello from kerastrain-toy"
    out = tmp_path / "out"
    proc = kerastrain("run", "--output-dir", str(out), *TINY, "--dataset-id", "toy:300",
                      "--max-steps", "6", "--log-every", "2", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "source 'toy'" in proc.stdout
    # Restricted away, the source is gone and the error says which sources exist.
    env["KERASTRAIN_LOAD_PLUGINS"] = ""
    refused = kerastrain("run", "--output-dir", str(tmp_path / "o2"), *TINY, "--dataset-id",
                         "toy:300", env=env)
    assert refused.returncode == 2


def test_duplicate_names_are_an_error_naming_both_plugins(kerastrain_plugin):
    from kerastrain.errors import PluginError
    from kerastrain.hookspecs import hookimpl
    from kerastrain.plugins import data_sources

    class Clash:
        @hookimpl
        def register_data_sources(self, register):
            from kerastrain.data.corpus import DefaultCorpusSource

            register(DefaultCorpusSource())

    kerastrain_plugin(Clash(), name="clashing-plugin")
    with pytest.raises(PluginError, match="kerastrain.data.corpus.*clashing-plugin"):
        data_sources()


def test_misspelt_hook_is_an_error(kerastrain_plugin):
    from kerastrain.errors import PluginError
    from kerastrain.hookspecs import hookimpl

    class Typo:
        @hookimpl
        def register_data_source(self, register):  # missing "s"
            pass

    with pytest.raises(PluginError, match="did you mean 'register_data_sources'"):
        kerastrain_plugin(Typo(), name="typo-plugin")


def test_fixture_unregisters_after_the_test(tmp_path):
    """In a pytest session of its own (the tests in order, one process): a plugin registered by
    a test that then fails is gone in the next test."""
    import subprocess
    import sys

    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # its own rootdir, not ours
    (tmp_path / "test_probe.py").write_text(
        "from kerastrain.hookspecs import hookimpl\n"
        "from kerastrain.plugins import get_plugin_manager\n\n"
        "class Probe:\n"
        "    @hookimpl\n"
        "    def register_data_sources(self, register):\n"
        "        pass\n\n"
        "def names():\n"
        "    return [name for name, _ in get_plugin_manager().list_name_plugin()]\n\n"
        "def test_registers_then_fails(kerastrain_plugin):\n"
        "    kerastrain_plugin(Probe(), name='probe-plugin')\n"
        "    assert 'probe-plugin' in names()\n"
        "    raise RuntimeError('the test fails after registering')\n\n"
        "def test_the_next_test_sees_no_probe():\n"
        "    assert 'probe-plugin' not in names()\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "test_probe.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "test_registers_then_fails" in proc.stdout.split("short test summary")[-1]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_the_same_command_resumes(tmp_path, sig):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "kerastrain", "run", "--output-dir", str(out), *TINY,
            "--max-steps", "100000", "--max-train-examples", "5000", "--log-every", "5",
            "--save-every", "100000"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and "step" in (out / "metrics.jsonl").read_text():
            break
        time.sleep(0.5)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    assert "checkpoint saved" in stdout
    saved = list(out.glob("checkpoint_step_*"))
    assert len(saved) == 1 and (saved[0] / "manifest.json").exists()
    step = int(saved[0].name.rsplit("_", 1)[1])
    resumed = kerastrain("run", "--output-dir", str(out), *TINY, "--max-steps", str(step + 4),
                         "--max-train-examples", "5000", "--log-every", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming from {saved[0]}" in resumed.stdout.replace("\n", "")


def test_auto_vocab_size_picks_and_reports_a_size(tmp_path):
    from tests.helpers import invoke

    out = tmp_path / "out"
    args = [a for a in TINY]
    args[args.index("bytes")] = "bpe"
    result = invoke("run", "--output-dir", str(out), *args, "--auto-vocab-size",
                    "--min-vocab-size", "300", "--max-vocab-size", "1200",
                    "--tokenizer-train-examples", "400", "--max-steps", "2")
    assert result.exit_code == 0, result.output
    vocab = json.loads((out / "model_config.json").read_text())["vocab_size"]
    assert 300 <= vocab <= 1200
    assert str(vocab) in result.output and "chars/token" in result.output.replace("\n", "")
    # A reused tokenizer that contradicts --vocab-size is a clear error.
    clash = invoke("run", "--output-dir", str(out), *args, "--vocab-size", str(vocab + 7),
                   "--max-steps", "3")
    assert clash.exit_code == 2 and "disagrees with the tokenizer" in clash.output


def test_resume_drops_metrics_past_the_checkpoint_and_a_torn_last_line(tmp_path):
    from kerastrain.training.resume import truncate_metrics

    rows = [{"kind": "train", "step": s, "loss": 1.0} for s in (1, 2, 3, 4)]
    rows.append({"kind": "summary", "step": 2})
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "train", "st'  # power loss
    (tmp_path / "metrics.jsonl").write_text(text)
    truncate_metrics(tmp_path, 2)
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in kept] == [("train", 1), ("train", 2)]
