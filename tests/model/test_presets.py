"""Presets: JSON files, the plugin hook, exact parameter counts, lookup errors, the CLI table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kerastrain.config import ModelConfig
from kerastrain.errors import ConfigError
from kerastrain.hookspecs import hookimpl
from kerastrain.model.presets import (
    available_presets,
    count_parameters,
    preset_config,
    resolve_preset,
)

TARGETS = {"nano": 5e6, "tiny": 15e6, "small": 50e6, "medium": 150e6, "large": 400e6, "xlarge": 1e9}
PRESET_DIR = Path(__file__).resolve().parents[2] / "presets"


def test_preset_files_have_the_documented_keys():
    names = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
    assert names == sorted(TARGETS)
    for path in PRESET_DIR.glob("*.json"):
        data = json.loads(path.read_text())
        assert set(data) == {"layers", "d_model", "heads", "d_ff", "seq_len", "description"}
        cfg = ModelConfig(**resolve_preset(path.stem))
        cfg.validate()


@pytest.mark.parametrize("name", list(TARGETS))
def test_parameter_counts_are_within_15_percent_of_the_target(name):
    params = count_parameters(preset_config(name, vocab_size=16000))
    assert abs(params / TARGETS[name] - 1) <= 0.15, params


def test_presets_are_registered_by_the_builtin_plugin_in_size_order():
    found = available_presets()
    assert list(found)[:6] == list(TARGETS)
    assert found["nano"].plugin == "kerastrain.model.presets"
    assert found["nano"].obj["num_layers"] == 4
    assert "5M" in found["nano"].extra["description"]


@pytest.mark.parametrize("name", ["nano", "tiny"])
def test_built_model_has_exactly_the_counted_parameters(name):
    from kerastrain.model.gpt import build_model

    cfg = preset_config(name)
    assert build_model(cfg).count_params() == count_parameters(cfg)


def test_count_parameters_formula_for_every_switch():
    # Hand-computed for d=32, ff=64, V=64, 2 layers, seq 16.
    base = dict(vocab_size=64, seq_len=16, d_model=32, num_layers=2, num_heads=4, d_ff=64)
    per_layer = 4 * 32 * 32 + 3 * 32 * 64 + 2 * 32
    assert count_parameters(ModelConfig(**base)) == 64 * 32 + 2 * per_layer + 32
    plain = ModelConfig(**base, use_swiglu=False, use_rmsnorm=False, use_rope=False,
                        tie_embeddings=False)
    per_layer = 4 * 32 * 32 + 2 * 32 * 64 + 2 * 64
    assert count_parameters(plain) == 2 * 64 * 32 + 16 * 32 + 2 * per_layer + 64


def test_unknown_preset_names_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'; available: nano, tiny"):
        resolve_preset("huge")


class ThirdPartyPresets:
    @hookimpl
    def register_presets(self, register):
        register("pico", {"layers": 1, "d_model": 64, "heads": 2, "d_ff": 128, "seq_len": 32},
                 description="a plugin's preset")


def test_third_party_presets_resolve_and_list(kerastrain_plugin):
    kerastrain_plugin(ThirdPartyPresets(), name="third-party-presets")
    assert resolve_preset("pico") == {
        "num_layers": 1, "d_model": 64, "num_heads": 2, "d_ff": 128, "seq_len": 32
    }
    from kerastrain.cli import cli

    result = CliRunner().invoke(cli, ["presets", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["pico"]["plugin"] == "third-party-presets"
    assert rows["nano"]["parameters"] == count_parameters(preset_config("nano"))
    assert rows["nano"]["training_memory_bytes"] > rows["nano"]["parameters"] * 16


def test_presets_table():
    from kerastrain.cli import cli

    result = CliRunner().invoke(cli, ["presets"])
    assert result.exit_code == 0, result.output
    assert "4,843,200" in result.output and "xlarge" in result.output


@pytest.mark.parametrize("swiglu", [True, False])
def test_biases_are_counted_exactly(swiglu):
    from kerastrain.model.gpt import build_model

    cfg = ModelConfig(vocab_size=64, seq_len=16, d_model=32, num_layers=2, num_heads=4, d_ff=64,
                      use_swiglu=swiglu, use_bias=True)
    assert build_model(cfg).count_params() == count_parameters(cfg)
    assert count_parameters(cfg) > count_parameters(ModelConfig(**{**cfg.to_dict(), "use_bias": False}))
