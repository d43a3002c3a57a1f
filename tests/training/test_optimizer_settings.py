"""LLM optimizer settings: --adam-beta1/2/epsilon reach Keras' AdamW and drive its update."""

import numpy as np
import pytest

from kerastrain.cli.options import parse_run_args
from kerastrain.config import ModelConfig
from kerastrain.errors import ConfigError
from kerastrain.model.gpt import build_model
from kerastrain.training.optimizer import make_optimizer

MODEL = ["--d-model", "32", "--num-layers", "1", "--num-heads", "2", "--d-ff", "64",
         "--seq-len", "16", "--vocab-size", "64"]


def config_from(*args):
    return parse_run_args(list(args))


def test_defaults_are_llm_practice_and_options_reach_adamw():
    cfg = config_from(*MODEL)
    assert (cfg.train.adam_beta1, cfg.train.adam_beta2, cfg.train.adam_epsilon) == (0.9, 0.95, 1e-8)
    cfg = config_from(*MODEL, "--adam-beta1", "0.8", "--adam-beta2", "0.99",
                      "--adam-epsilon", "1e-6", "--grad-clip", "0", "--weight-decay", "0")
    model = build_model(ModelConfig(vocab_size=64, seq_len=16, d_model=32, num_layers=1,
                                    num_heads=2, d_ff=64))
    opt = make_optimizer(cfg, 1e-3, model)
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.8, 0.99, 1e-6)
    # One real update: m = (1 - beta1) g, v = (1 - beta2) g^2.
    grads = [np.full(v.shape, 0.5, "float32") for v in model.trainable_variables]
    opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    m, v = np.asarray(opt._momentums[0].value), np.asarray(opt._velocities[0].value)
    np.testing.assert_allclose(m, 0.2 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(v, 0.01 * 0.25, rtol=1e-5)


@pytest.mark.parametrize("args", [["--adam-beta2", "1.0"], ["--adam-beta1", "-0.1"],
                                  ["--adam-epsilon", "0"]])
def test_bad_values_are_one_line_errors(args):
    with pytest.raises(ConfigError, match="adam"):
        config_from(*MODEL, *args)
