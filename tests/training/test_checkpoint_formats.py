"""One checkpoint format for every run, read by plain Orbax; the format before it is refused.

The loading snippet of docs/guides/checkpoints.md
(``orbax.checkpoint.PyTreeCheckpointer().restore("final_checkpoint/state/model")``) is run as
written, in a fresh process with one CPU device, on the final checkpoint of a one-device run and
of a 2-device FSDP run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kerastrain.errors import ConfigError
from tests.helpers import TINY, invoke, kerastrain
from tests.training.test_distribution import SMALL, forced_devices, run_script

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


def test_a_checkpoint_in_the_format_before_orbax_is_refused_in_one_line(tmp_path):
    """``model.weights.h5`` + ``optimizer.npz`` (never released): every way in says what to do."""
    from kerastrain.config import ModelConfig
    from kerastrain.data.tokenizer import ByteTokenizer
    from kerastrain.model.gpt import build_model
    from kerastrain.storage.manifest import write_manifest

    run, old = tmp_path / "run", tmp_path / "run" / "final_checkpoint"
    old.mkdir(parents=True)
    cfg = ModelConfig(vocab_size=257, seq_len=32, d_model=32, num_layers=2, num_heads=2, d_ff=64)
    cfg.save(run / "model_config.json")
    ByteTokenizer().save(run / "tokenizer.json")
    build_model(cfg).save_weights(old / "model.weights.h5")  # as Keras wrote it
    np.savez(old / "optimizer.npz")
    (old / "state.json").write_text(json.dumps({"step": 4, "kind": "final", "optimizer": {}}))
    write_manifest(old, {"step": 4})

    import kerastrain

    for where in (run, old):
        with pytest.raises(ConfigError) as refused:
            kerastrain.load(where)
        message = str(refused.value.format_message())
        assert "\n" not in message and "predates kerastrain's first release" in message
        assert f"{old} holds model.weights.h5" in message
    said = invoke("generate", str(run), "--prompt", "Hi", "--max-new-tokens", "2")
    assert said.exit_code == 2 and said.output.count("\n") == 1, said.output
    assert "predates kerastrain's first release" in said.output
    resumed = invoke("run", *TINY, "--max-steps", "8", "--output-dir", str(tmp_path / "resumed"),
                     "--resume-from", str(old))
    assert resumed.exit_code == 2, resumed.output
    assert "predates kerastrain's first release" in resumed.output
