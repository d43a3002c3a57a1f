"""The command line imports Keras, keras-hub and tensorboardX without the optional packages they
would pull in (pandas, matplotlib, scikit-learn, requests, nltk, kagglehub, boto3...); those
still import afterwards, Keras still computes, and ``kerastrain generate`` starts without
keras-hub and prints what the in-process decoder gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec

import keras
import numpy as np

from kerastrain.config import ModelConfig
from kerastrain.data.tokenizer import ByteTokenizer
from kerastrain.model.decoder import generate_text, make_sampler
from kerastrain.model.gpt import build_model
from tests.helpers import write_checkpoint

SKIPPED = ("pandas", "matplotlib", "sklearn", "requests")
ENV = {**os.environ, "KERAS_BACKEND": "jax", "KERASTRAIN_COMPILE_CACHE": "off"}

PROBE = """
import json, sys
{install}
import keras
loaded = {{name: name in sys.modules for name in {names!r}}}
x = keras.ops.convert_to_tensor([[1.0, 2.0]])
layer = keras.layers.Dense(3, kernel_initializer="ones")
import matplotlib.pyplot, numpy  # the skipped packages still import after Keras
print(json.dumps({{"loaded": loaded, "dense": numpy.asarray(layer(x)).tolist(),
                  "pyplot": hasattr(matplotlib.pyplot, "plot")}}))
"""


def _probe(install: bool) -> dict:
    code = PROBE.format(names=SKIPPED, install="from kerastrain.lean_imports import install; "
                        "install()" if install else "")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                         timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_keras_imports_without_the_optional_packages_and_still_works():
    installed = [name for name in SKIPPED if find_spec(name) is not None]
    assert "matplotlib" in installed  # a dependency of kerastrain: the check below means something
    plain, lean = _probe(install=False), _probe(install=True)
    assert all(plain["loaded"][name] for name in installed)  # what Keras does by itself
    assert not any(lean["loaded"].values())
    assert lean["dense"] == plain["dense"] == [[3.0, 3.0, 3.0]]
    assert lean["pyplot"] is True


def test_turned_off_by_the_environment(monkeypatch):
    from kerastrain import lean_imports

    monkeypatch.setenv(lean_imports.ENV, "0")
    assert lean_imports.install() is None
    monkeypatch.delenv(lean_imports.ENV)
    finder = lean_imports.install()
    try:
        assert finder is not None and sys.meta_path[0] is finder
        assert lean_imports.install() is None  # once
        import pandas  # noqa: F401 - no window is open: imports as usual
    finally:
        lean_imports.uninstall(finder)
    assert finder not in sys.meta_path


def test_generate_starts_without_keras_hub_and_prints_the_decoders_text(tmp_path):
    keras.utils.set_random_seed(5)
    cfg = ModelConfig(vocab_size=257, seq_len=32, d_model=32, num_layers=2, num_heads=4, d_ff=64,
                      dropout_rate=0.0)
    model = build_model(cfg)
    for v in model.weights:  # larger weights so the greedy text is not one repeated byte
        v.assign(np.asarray(v.value) * 8 if len(v.shape) == 2 else v.value)
    cfg.save(tmp_path / "model_config.json")
    tokenizer = ByteTokenizer()
    tokenizer.save(tmp_path / "tokenizer.json")
    write_checkpoint(model, tmp_path / "final_checkpoint")
    expected = generate_text(model, tokenizer, "Hi", 10, sampler=make_sampler(temperature=0))

    names = (*SKIPPED, "keras_hub", "nltk", "kagglehub")
    # generate ends with os._exit (no interpreter teardown, no atexit): report the modules there
    code = ("import json, os, sys\n"
            "end = os._exit\n"
            f"os._exit = lambda c: (print(json.dumps([n for n in {names!r} if n in sys.modules]),"
            " file=sys.stderr, flush=True), end(c))\n"
            "sys.argv = ['kerastrain', 'generate', sys.argv[1], '--prompt', 'Hi', "
            "'--max-new-tokens', '10', '--temperature', '0']\n"
            "from kerastrain.cli import main\nmain()\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []
