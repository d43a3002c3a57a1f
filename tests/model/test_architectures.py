"""Architectures are a plugin kind: built-ins registered like a third party's, conflicts refused."""

from __future__ import annotations

import json

import pytest

from kerastrain.config import ModelConfig
from kerastrain.errors import ConfigError, PluginError
from kerastrain.hookspecs import hookimpl
from kerastrain.model.architectures import (
    Architecture,
    available_architectures,
    export_architecture,
    importing_architecture,
    keras_hub_family,
)
from tests.helpers import invoke


class Phi3AsLlama:
    """A third-party plugin adding a family (its mapping borrowed from llama3: a registry test)."""

    @hookimpl
    def register_architectures(self, register):
        register(Architecture("phi3", "a third-party family",
                              hf_model_types=("phi3",), backbone_classes=("Phi3Backbone",),
                              **keras_hub_family("llama3")))


class Clash:
    @hookimpl
    def register_architectures(self, register):
        register(Architecture("gpt2", "another GPT-2"))


def test_builtin_architectures_are_listed_by_the_plugin_report():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    registers = rows["kerastrain.model.architectures"]["registers"]
    assert registers == ["architecture:gpt", "architecture:llama3", "architecture:gpt2",
                         "architecture:mistral", "architecture:qwen2", "architecture:qwen3",
                         "architecture:gemma2", "architecture:gemma3"]


def test_export_picks_the_architecture_that_holds_the_options():
    assert export_architecture(ModelConfig()).name == "llama3"
    gpt2 = ModelConfig(use_rmsnorm=False, use_swiglu=False, use_rope=False, d_ff=2048,
                       activation="gelu_tanh")
    assert export_architecture(gpt2).name == "gpt2"
    with pytest.raises(ConfigError, match="llama3 cannot because of --no-rope.*gpt2 cannot"):
        export_architecture(ModelConfig(use_rope=False))
    # --qk-norm from scratch (issue 20) exports to the first family holding it: Qwen 3.
    assert export_architecture(ModelConfig(qk_norm=True, head_dim=32)).name == "qwen3"
    assert export_architecture(ModelConfig(qkv_bias=True, tie_embeddings=False)).name == "qwen2"
    gemma = dict(glu_activation="gelu_tanh", scale_embeddings=True, post_norms=True)
    assert export_architecture(ModelConfig(**gemma, final_softcap=30.0)).name == "gemma2"
    assert export_architecture(ModelConfig(**gemma, qk_norm=True, sliding_window=64,
                                           sliding_window_pattern=6)).name == "gemma3"
    with pytest.raises(ConfigError, match="qwen3 cannot because of .*use_bias"):
        export_architecture(ModelConfig(qk_norm=True, use_bias=True))


def test_a_third_party_architecture_imports_its_model_type(kerastrain_plugin):
    with pytest.raises(ConfigError, match="no installed architecture imports model_type 'phi3'"):
        importing_architecture(model_type="phi3")
    kerastrain_plugin(Phi3AsLlama(), name="phi3-plugin")
    assert importing_architecture(model_type="phi3").name == "phi3"
    assert importing_architecture(model_type="llama").name == "llama3"


def test_two_plugins_registering_one_architecture_is_an_error(kerastrain_plugin):
    kerastrain_plugin(Clash(), name="clash")
    with pytest.raises(PluginError, match="architecture 'gpt2' is registered by both"):
        available_architectures()


class GPT2Presets:
    @hookimpl
    def register_presets(self, register):
        register("gpt2-pico", {"architecture": "gpt2", "layers": 2, "d_model": 32, "heads": 4,
                               "d_ff": 128, "seq_len": 32})
        register("mystery", {"architecture": "mamba", "layers": 2})


def test_a_preset_naming_an_architecture_builds_a_model_that_exports_to_it(kerastrain_plugin):
    from kerastrain.model.gpt import build_model
    from kerastrain.model.presets import count_parameters, preset_config

    kerastrain_plugin(GPT2Presets(), name="gpt2-presets")
    cfg = preset_config("gpt2-pico", vocab_size=100)
    assert (cfg.use_rope, cfg.use_bias, cfg.activation) == (False, True, "gelu_tanh")
    assert export_architecture(cfg).name == "gpt2"
    assert build_model(cfg).count_params() == count_parameters(cfg)
    with pytest.raises(ConfigError, match="names architecture 'mamba'; installed: gpt, llama3, gpt2, mistral, qwen2"):
        preset_config("mystery")
