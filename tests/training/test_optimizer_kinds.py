"""Optimizers and learning-rate schedules are plugin kinds: a new one is one registered plugin."""

from __future__ import annotations

import json

from kerastrain.hookspecs import hookimpl
from tests.helpers import TINY, invoke


class PlainSGD:
    """A third party's optimizer and schedule; what it built is kept on the instance."""

    def __init__(self):
        self.built = []

    @hookimpl
    def register_optimizers(self, register):
        def sgd(train, model, **common):
            import keras

            optimizer = keras.optimizers.SGD(momentum=0.0, **common)
            self.built.append(optimizer)
            return optimizer

        register("plain-sgd", sgd)

    @hookimpl
    def register_lr_schedules(self, register):
        def constant(train, total_steps):
            import keras

            # A schedule object (not a float): accumulation must evaluate it per update too.
            return keras.optimizers.schedules.PolynomialDecay(
                train.learning_rate, total_steps, train.learning_rate), 0

        register("flat", constant)


def test_a_plugin_optimizer_and_schedule_train_a_run(tmp_path, kerastrain_plugin):
    plugin = kerastrain_plugin(PlainSGD(), name="plain-sgd-plugin")
    out = tmp_path / "out"
    result = invoke("run", "--output-dir", str(out), *TINY, "--max-steps", "3", "--log-every",
                    "1", "--optimizer", "plain-sgd", "--lr-schedule", "flat",
                    "--gradient-accumulation-steps", "2")
    assert result.exit_code == 0, result.output
    assert [type(o).__name__ for o in plugin.built] == ["SGD"]
    assert int(plugin.built[0].iterations) == 3  # three updates of two micro-batches each
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows if r.get("kind") == "train"] == [3e-3] * 3
    saved = json.loads((out / "run_config.json").read_text())["train"]
    assert (saved["optimizer"], saved["lr_schedule"]) == ("plain-sgd", "flat")
    listed = json.loads(invoke("plugins", "--json").output)
    mine = next(r for r in listed if r["name"] == "plain-sgd-plugin")
    assert {"optimizer:plain-sgd", "schedule:flat"} <= set(mine["registers"])


def test_an_unknown_optimizer_is_one_line_before_any_work(tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "--output-dir", str(out), *TINY, "--optimizer", "adamww")
    assert result.exit_code == 2
    assert "unknown --optimizer 'adamww'; installed: adamw" in result.output
    assert not (out / "tokenizer.json").exists()


def test_keras_optimizers_are_selectable_by_name_with_keras_defaults():
    import keras

    from kerastrain.cli.options import parse_run_args
    from kerastrain.config import ModelConfig
    from kerastrain.model.gpt import build_model
    from kerastrain.plugins import optimizers
    from kerastrain.training.optimizer import KERAS_OPTIMIZERS, make_optimizer

    # Every optimizer class Keras exports, but the wrappers, AdamW and Muon (our own settings)
    # and ScheduleFreeAdamW (made for no schedule).
    shipped = {n for n in dir(keras.optimizers) if isinstance(getattr(keras.optimizers, n), type)
               and issubclass(getattr(keras.optimizers, n), keras.optimizers.Optimizer)}
    assert set(KERAS_OPTIMIZERS) == shipped - {"Optimizer", "AdamW", "Muon", "LossScaleOptimizer",
                                               "MultiOptimizer", "ScheduleFreeAdamW"}
    assert {n.lower() for n in KERAS_OPTIMIZERS} | {"adamw", "muon"} <= set(optimizers())
    model = build_model(ModelConfig(vocab_size=64, seq_len=16, d_model=32, num_layers=1,
                                    num_heads=2, d_ff=64))
    opt = make_optimizer(parse_run_args(["--optimizer", "lion", "--grad-clip", "0.5"]), 1e-3,
                         model)
    assert type(opt) is keras.optimizers.Lion and opt.global_clipnorm == 0.5
    assert opt.beta_1 == keras.optimizers.Lion().beta_1
