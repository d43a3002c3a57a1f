"""Our rotary and position embeddings compute what keras-hub's do, and training needs no keras-hub."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest


def test_rotary_matches_keras_hub_at_every_offset():
    keras_hub = pytest.importorskip("keras_hub")
    from kerastrain.model.embeddings import RotaryEmbedding

    x = np.random.default_rng(0).normal(size=(2, 7, 3, 8)).astype("float32")
    ours = RotaryEmbedding(max_wavelength=10000)
    theirs = keras_hub.layers.RotaryEmbedding(max_wavelength=10000, sequence_axis=1,
                                              feature_axis=-1)
    for start in (0, 5):
        np.testing.assert_allclose(np.asarray(ours(x, start_index=start)),
                                   np.asarray(theirs(x, start_index=start)), atol=1e-6)


def test_position_embedding_matches_keras_hub_and_keeps_its_weight_name():
    keras_hub = pytest.importorskip("keras_hub")
    from kerastrain.model.embeddings import PositionEmbedding

    x = np.zeros((2, 5, 4), "float32")
    ours, theirs = PositionEmbedding(16), keras_hub.layers.PositionEmbedding(16)
    ours.build(x.shape)
    theirs.build(x.shape)
    table = np.arange(64, dtype="float32").reshape(16, 4)
    ours.set_weights([table])
    theirs.set_weights([table])
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights] == ["embeddings"]
    for start in (0, 3):
        np.testing.assert_array_equal(np.asarray(ours(x, start_index=start)),
                                      np.asarray(theirs(x, start_index=start)))


def test_building_and_running_the_model_imports_no_keras_hub():
    code = (
        "import sys\n"
        "sys.modules['keras_hub'] = None  # as if not installed: importing it fails\n"
        "import numpy as np\n"
        "from kerastrain.config import ModelConfig\n"
        "from kerastrain.model.gpt import build_model\n"
        "for rope in (True, False):\n"
        "    cfg = ModelConfig(vocab_size=64, seq_len=16, d_model=32, num_layers=1, num_heads=2,\n"
        "                      d_ff=64, use_rope=rope)\n"
        "    out = build_model(cfg)(np.zeros((1, 16), 'int32'))\n"
        "    assert out.shape == (1, 16, 64)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
