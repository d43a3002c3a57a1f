"""Many devices in one process (forced host CPU devices): the same losses as one device, sharded
state that takes 1/N of the memory, and one-line errors for a mesh that does not fit.

JAX reads ``XLA_FLAGS`` when it starts, so every case runs in a subprocess; the cases that need
the same device count share one subprocess to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import kerastrain

SMALL = [
    "--tokenizer", "bytes", "--d-model", "32", "--num-layers", "2", "--num-heads", "2",
    "--d-ff", "64", "--seq-len", "32", "--warmup-steps", "2", "--learning-rate", "3e-3",
    "--max-train-examples", "200", "--max-val-examples", "10", "--log-every", "1",
    "--shuffle-buffer-size", "50",
]
STEPS = ["--max-steps", "8"]
REL_TOL = 2e-6  # losses are logged with 6 decimals; measured differences are <= 2e-7 relative


def forced_devices(n: int) -> dict:
    # A wide console: rich would otherwise wrap long paths in the middle of a word.
    return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "COLUMNS": "1000"}


def run_script(script: str, devices: int, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, **forced_devices(devices), KERAS_BACKEND="jax")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def train_losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def assert_close(a: list[float], b: list[float], what: str) -> None:
    assert len(a) == len(b), what
    worst = max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))
    assert worst <= REL_TOL, f"{what}: relative difference {worst:.2e}\n{a}\n{b}"


def test_data_fsdp_and_tensor_parallel_match_one_device_and_bad_meshes_fail(tmp_path):
    """4 devices with per-device batch 2 train exactly like 1 device with batch 8."""
    one = kerastrain("run", *SMALL, *STEPS, "--batch-size", "8",
                     "--output-dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    meshes = {"dp4": [], "fsdp4": ["--fsdp", "4"],
              "tp2dp2": ["--tensor-parallel", "2", "--data-parallel", "2"]}
    bad = {"product": ["--data-parallel", "3"], "heads": ["--tensor-parallel", "4"]}
    script = f"""
        import json, sys
        from click.testing import CliRunner
        from kerastrain.cli import cli
        base = {SMALL + STEPS + ["--batch-size", "2"]!r}
        results = {{}}
        for name, extra in {dict(meshes, **bad)!r}.items():
            r = CliRunner().invoke(cli, ["run", *base, *extra, "--output-dir",
                                         {str(tmp_path)!r} + "/" + name])
            results[name] = [r.exit_code, r.output]
        print("RESULTS" + json.dumps(results))
    """
    proc = run_script(script, 4)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.split("RESULTS", 1)[1])
    baseline = train_losses(tmp_path / "one")
    assert len(baseline) == 8
    for name in meshes:
        code, output = results[name]
        assert code == 0, output
        assert "global batch 8, 256 tokens per update" in " ".join(output.split())
        assert_close(train_losses(tmp_path / name), baseline, name)
    for name in bad:
        code, output = results[name]
        assert code == 2, output
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error:"), output
        assert not (tmp_path / name).exists()  # nothing written
    assert "has 3 devices but 4 are present" in results["product"][1]
    assert "--tensor-parallel 4 must divide --num-heads (2)" in results["heads"][1]


def test_fsdp_shards_weights_and_optimizer_state():
    """XLA's memory analysis: per-device state under --fsdp 4 is within 1/4 + 10% of unsharded."""
    script = """
        import json, sys
        from kerastrain.config import DistributionConfig, ModelConfig, RunConfig, TrainConfig
        from kerastrain.training.distribution import measure_state_bytes
        config = RunConfig(
            model=ModelConfig(vocab_size=256, d_model=64, num_layers=2, num_heads=4, d_ff=128,
                              seq_len=32),
            train=TrainConfig(batch_size=2),
            distribution=DistributionConfig(fsdp=int(sys.argv[1]) if len(sys.argv) > 1 else None))
        print("RESULT" + json.dumps(measure_state_bytes(config)))
    """
    def measure(devices: int) -> dict:
        proc = run_script(script.replace("sys.argv[1]) if len(sys.argv) > 1", f"{devices})")
                          .replace(" else None", ""), devices)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.split("RESULT", 1)[1])

    whole, sharded = measure(1), measure(4)
    ratio = sharded["arguments"] / whole["arguments"]
    assert ratio <= 0.25 + 0.10, (ratio, whole, sharded)
    assert ratio < 0.3


def test_checkpoint_from_4_devices_resumes_on_2_and_1_and_skips_a_corrupt_newest(tmp_path):
    """The checkpoint holds sharded arrays (Orbax): any mesh reshards them on load. With the same
    global batch (``--batch-size`` x devices = 8) the resumed runs repeat the uninterrupted
    losses; kerastrain.load reads it on one device."""
    run = [*SMALL, "--max-steps", "8", "--save-every", "4"]
    out = tmp_path / "run"
    first = kerastrain("run", *run, "--batch-size", "2", "--fsdp", "2", "--output-dir", str(out),
                       env=forced_devices(4))
    assert first.returncode == 0, first.stderr
    uninterrupted = train_losses(out)
    assert len(uninterrupted) == 8
    final = out / "final_checkpoint"
    assert (final / "state" / "model").is_dir() and not (final / "model.weights.h5").exists()
    assert json.loads((final / "state.json").read_text())["format"] == "orbax"
    assert not list(out.glob(".tmp-*")), "every write was sealed and renamed"
    # Read back on one device (kerastrain.load): the run's own final validation loss.
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "eval"]
    scored = kerastrain("eval", str(out), "--json", env=forced_devices(1))
    assert scored.returncode == 0, scored.stderr
    val = json.loads(scored.stdout.strip().splitlines()[-1])["loss"]
    assert abs(val - evals[-1]["val_loss"]) <= 1e-4 * evals[-1]["val_loss"]
    gen = kerastrain("generate", str(out), "--prompt", "the", "--max-new-tokens", "5",
                     env=forced_devices(1))
    assert gen.returncode == 0, gen.stderr
    # The newest checkpoint is damaged on disk: auto-resume says so and takes step 4 instead.
    damaged = max((final / "state" / "optimizer").rglob("*"),
                  key=lambda p: p.stat().st_size if p.is_file() else -1)
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 1
    damaged.write_bytes(bytes(data))
    (out / ".tmp-checkpoint_step_6" / "state").mkdir(parents=True)  # as a kill -9 leaves it
    two = kerastrain("run", *run, "--batch-size", "4", "--output-dir", str(out),
                     env=forced_devices(2))
    assert two.returncode == 0, two.stderr
    said = " ".join(two.stdout.split())
    assert "Skipping final_checkpoint" in said and "fails its sha256 check" in said
    assert "falling back to the previous complete checkpoint" in said
    assert "Resuming from" in said and "checkpoint_step_4 (step 4)" in said
    assert_close(train_losses(out), uninterrupted, "resumed on 2 devices")
    assert not list(out.glob(".tmp-*"))
    one = kerastrain("run", *run, "--batch-size", "8", "--output-dir", str(tmp_path / "one"),
                     "--resume-from", str(out / "checkpoint_step_4"), env=forced_devices(1))
    assert one.returncode == 0, one.stderr
    assert_close(train_losses(tmp_path / "one"), uninterrupted[4:], "resumed on 1 device")
