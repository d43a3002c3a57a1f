"""One checkpoint format for every run, read by plain Orbax; the format before it still resumes.

The loading snippet of docs/guides/checkpoints.md
(``orbax.checkpoint.PyTreeCheckpointer().restore("final_checkpoint/state/model")``) is run as
written, in a fresh process with one CPU device, on the final checkpoint of a one-device run and
of a 2-device FSDP run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from tests.helpers import TINY, invoke, kerastrain
from tests.legacy_format import convert_to_legacy
from tests.training.test_distribution import SMALL, forced_devices, run_script, train_losses

SNIPPET = """
    import sys
    import jax
    import numpy as np
    import orbax.checkpoint

    params = orbax.checkpoint.PyTreeCheckpointer().restore(sys.argv[1] + "/final_checkpoint/state/model")
    flat = {"/".join(k.key for k in path): value
            for path, value in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert jax.device_count() == 1
    assert all(isinstance(v, np.ndarray) for v in flat.values()), {type(v) for v in flat.values()}

    import kerastrain

    model, _ = kerastrain.load(sys.argv[1])
    weights = {v.path: np.asarray(v.value) for v in model.weights}
    assert sorted(flat) == sorted(weights), sorted(set(flat) ^ set(weights))
    for path, value in weights.items():
        np.testing.assert_array_equal(flat[path], value, err_msg=path)
    print("EQUAL", len(weights))
"""


def restore_in_one_cpu(run: Path) -> str:
    proc = run_script(SNIPPET.replace("sys.argv[1]", repr(str(run))), devices=1)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_plain_orbax_restore_of_final_checkpoint_returns_the_weights_whatever_the_mesh(tmp_path):
    run = [*SMALL, "--max-steps", "3", "--save-every", "2"]
    one, two = tmp_path / "one", tmp_path / "two"
    first = kerastrain("run", *run, "--batch-size", "4", "--output-dir", str(one),
                       env=forced_devices(1))
    assert first.returncode == 0, first.stderr
    second = kerastrain("run", *run, "--batch-size", "2", "--fsdp", "2", "--output-dir", str(two),
                        env=forced_devices(2))
    assert second.returncode == 0, second.stderr
    for out, mesh in ((one, "one device"), (two, "data 1 x fsdp 2 x tensor 1")):
        state = json.loads((out / "final_checkpoint" / "state.json").read_text())
        assert state["format"] == "orbax" and state["mesh"] == mesh
        assert not (out / "final_checkpoint" / "model.weights.h5").exists()
        said = restore_in_one_cpu(out)
        assert f"EQUAL {state['weights']['count']}" in said


def test_a_checkpoint_in_the_format_before_orbax_loads_and_resumes_exactly(tmp_path):
    args = [*TINY, "--dropout-rate", "0.1", "--max-steps", "8", "--save-every", "4",
            "--log-every", "1", "--eval-every", "1000", "--shuffle-buffer-size", "50"]
    uninterrupted = tmp_path / "a"
    assert invoke("run", *args, "--output-dir", str(uninterrupted)).exit_code == 0
    old = tmp_path / "old" / "checkpoint_step_4"
    shutil.copytree(uninterrupted / "checkpoint_step_4", old)
    convert_to_legacy(old)
    assert (old / "model.weights.h5").is_file() and not (old / "state").exists()

    import orbax.checkpoint as ocp

    import kerastrain

    model, _ = kerastrain.load(old)
    saved = ocp.PyTreeCheckpointer().restore(
        (uninterrupted / "checkpoint_step_4" / "state" / "model").absolute())
    for var in model.weights:
        value = saved
        for part in var.path.split("/"):
            value = value[part]
        np.testing.assert_array_equal(np.asarray(var.value), value, err_msg=var.path)

    resumed = tmp_path / "resumed"
    result = invoke("run", *args, "--output-dir", str(resumed), "--resume-from", str(old))
    assert result.exit_code == 0, result.output
    assert "at step 4" in " ".join(result.output.split())
    expected = train_losses(uninterrupted)[4:]
    got = train_losses(resumed)
    assert len(got) == 4
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert (resumed / "final_checkpoint" / "state" / "model").is_dir()
