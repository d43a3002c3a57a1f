"""The family table: built-in entries registered like a third party's, conflicts refused, the
export picking the first entry that holds a model; and a new family is one entry (Phi-3, below:
fused projections), with import, export, generate, the planner and LoRA working from it alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerastrain.config import ModelConfig
from kerastrain.errors import ConfigError, PluginError
from kerastrain.hookspecs import hookimpl
from kerastrain.model.families import (
    LLAMA_KEYS,
    Family,
    Key,
    Weight,
    available_families,
    export_family,
    importing_family,
)
from tests.helpers import invoke

# Phi-3 (transformers' modeling_phi3): a Llama whose query, key and value are one ``qkv_proj``
# and whose gate and up are one ``gate_up_proj`` (gate first). One entry, nothing else.
_P = "model.layers.{i}."
PHI3 = Family(
    "phi3", "Phi-3: a Llama with fused qkv and gate/up projections (Phi3ForCausalLM)", ("phi3",),
    "Phi3ForCausalLM", dict(use_rmsnorm=True, use_swiglu=True, use_rope=True, use_bias=False),
    (*LLAMA_KEYS, Key("rope_theta", "rope_theta", 10000.0),
     Key("tie_word_embeddings", "tie_embeddings", False), Key("sliding_window", "sliding_window"),
     Key("partial_rotary_factor", const=1.0), Key("rope_scaling", const=None)),
    (Weight("token_embedding.embeddings", "model.embed_tokens.weight"),
     Weight("token_embedding.reverse_embeddings", "lm_head.weight", "T", "!tie_embeddings"),
     Weight("final_norm.scale", "model.norm.weight"),
     Weight(tuple(f"blocks.{{i}}.attention.{n}.kernel" for n in ("query", "key", "value")),
            _P + "self_attn.qkv_proj.weight", "T"),
     Weight("blocks.{i}.attention.output_projection.kernel", _P + "self_attn.o_proj.weight", "T"),
     Weight(("blocks.{i}.mlp.gate.kernel", "blocks.{i}.mlp.up.kernel"),
            _P + "mlp.gate_up_proj.weight", "T"),
     Weight("blocks.{i}.mlp.down.kernel", _P + "mlp.down_proj.weight", "T"),
     Weight("blocks.{i}.attention_norm.scale", _P + "input_layernorm.weight"),
     Weight("blocks.{i}.mlp_norm.scale", _P + "post_attention_layernorm.weight")))


class Phi3Plugin:
    @hookimpl
    def register_architectures(self, register):
        register(PHI3)


class Clash:
    @hookimpl
    def register_architectures(self, register):
        register(Family("gpt2", "another GPT-2"))


def test_builtin_architectures_are_listed_by_the_plugin_report():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    registers = rows["kerastrain.model.families"]["registers"]
    assert registers == ["architecture:gpt", "architecture:llama3", "architecture:gpt2",
                         "architecture:mistral", "architecture:qwen2", "architecture:qwen3",
                         "architecture:gemma2", "architecture:gemma3"]


def test_export_picks_the_architecture_that_holds_the_options():
    assert export_family(ModelConfig()).name == "llama3"
    gpt2 = ModelConfig(use_rmsnorm=False, use_swiglu=False, use_rope=False, d_ff=2048,
                       activation="gelu_tanh")
    assert export_family(gpt2).name == "gpt2"
    with pytest.raises(ConfigError, match="llama3 cannot because of use_rope=False.*gpt2 cannot"):
        export_family(ModelConfig(use_rope=False))
    # --qk-norm from scratch (issue 20) exports to the first family holding it: Qwen 3.
    assert export_family(ModelConfig(qk_norm=True, head_dim=32)).name == "qwen3"
    assert export_family(ModelConfig(qkv_bias=True, tie_embeddings=False)).name == "qwen2"
    gemma = dict(glu_activation="gelu_tanh", scale_embeddings=True, post_norms=True)
    assert export_family(ModelConfig(**gemma, final_softcap=30.0)).name == "gemma2"
    assert export_family(ModelConfig(**gemma, qk_norm=True, sliding_window=64,
                                           sliding_window_pattern=6)).name == "gemma3"
    with pytest.raises(ConfigError, match="qwen3 cannot because of .*use_bias"):
        export_family(ModelConfig(qk_norm=True, use_bias=True))


def test_a_third_party_family_imports_its_model_type(kerastrain_plugin):
    with pytest.raises(ConfigError, match="no installed architecture imports model_type 'phi3'"):
        importing_family("phi3")
    kerastrain_plugin(Phi3Plugin(), name="phi3-plugin")
    assert importing_family("phi3").name == "phi3"
    assert importing_family("llama").name == "llama3"


def test_two_plugins_registering_one_architecture_is_an_error(kerastrain_plugin):
    kerastrain_plugin(Clash(), name="clash")
    with pytest.raises(PluginError, match="architecture 'gpt2' is registered by both"):
        available_families()


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
    assert export_family(cfg).name == "gpt2"
    assert build_model(cfg).count_params() == count_parameters(cfg)
    with pytest.raises(ConfigError, match="names architecture 'mamba'; installed: gpt, llama3, gpt2, mistral, qwen2"):
        preset_config("mystery")


def _phi3_folder(tmp_path):
    """A SmolLM 2 (Llama) folder's weights fused as Phi-3 stores them: the same model."""
    from safetensors.numpy import load_file, save_file

    from tests.model.hf_reference import write_folder

    llama = write_folder(tmp_path / "llama", "smollm2")
    config = json.loads((llama / "config.json").read_text())
    config.update(model_type="phi3", architectures=["Phi3ForCausalLM"], partial_rotary_factor=1.0,
                  pad_token_id=0, bos_token_id=0, eos_token_id=0)  # ids within the tiny vocabulary
    tensors = load_file(str(llama / "model.safetensors"))
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors[p + "self_attn.qkv_proj.weight"] = np.concatenate(
            [tensors.pop(p + f"self_attn.{n}_proj.weight") for n in "qkv"])
        tensors[p + "mlp.gate_up_proj.weight"] = np.concatenate(
            [tensors.pop(p + f"mlp.{n}_proj.weight") for n in ("gate", "up")])
    phi3 = tmp_path / "phi3"
    phi3.mkdir()
    save_file(tensors, str(phi3 / "model.safetensors"), metadata={"format": "pt"})
    (phi3 / "config.json").write_text(json.dumps(config))
    (phi3 / "tokenizer.json").write_bytes((llama / "tokenizer.json").read_bytes())
    return llama, phi3


def test_a_new_family_is_one_entry(kerastrain_plugin, tmp_path):
    """Phi-3 registered as one entry: its folder imports with the logits of transformers' Llama
    definition on the unfused weights, decodes with the KV cache as the forward does, exports
    back to the same tensors, is planned exactly, and LoRA reaches its fused projections."""
    from safetensors.numpy import load_file

    from kerastrain.model.decoder import generate_ids, make_sampler
    from kerastrain.model.gpt import build_model
    from kerastrain.model.hf_import import open_pretrained
    from kerastrain.model.hf_weights import write_hf
    from kerastrain.model.lora import apply_lora
    from kerastrain.model.presets import count_lora_parameters
    from tests.model.hf_reference import reference_logits

    llama, phi3 = _phi3_folder(tmp_path)
    with pytest.raises(ConfigError, match="no installed architecture imports model_type 'phi3'"):
        open_pretrained(str(phi3), 32)
    kerastrain_plugin(Phi3Plugin(), name="phi3-plugin")
    pretrained = open_pretrained(str(phi3), 32)
    assert pretrained.architecture is PHI3
    assert pretrained.config == open_pretrained(str(llama), 32).config
    model = build_model(pretrained.config)
    pretrained.load_into(model)
    ids = np.random.default_rng(0).integers(0, pretrained.config.vocab_size, (2, 24)).astype("int32")
    np.testing.assert_allclose(np.asarray(model(ids)), reference_logits(llama, ids), atol=1e-4)
    prompt, greedy = ids[0, :8].tolist(), ids[0, :8].tolist()
    for _ in range(6):
        greedy.append(int(reference_logits(llama, np.array([greedy]))[0, -1].argmax()))
    assert generate_ids(model, prompt, 6, make_sampler(temperature=0), None) == greedy[8:]

    out = tmp_path / "exported"
    out.mkdir()
    write_hf(model, PHI3, out)
    theirs, ours = load_file(str(phi3 / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    assert json.loads((out / "config.json").read_text())["model_type"] == "phi3"

    result = invoke("plan", "--init-from", str(phi3), "--seq-len", "32", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["parameters"] == model.count_params()
    assert apply_lora(model, 2) == count_lora_parameters(pretrained.config, 2)


def test_an_entry_that_leaves_out_a_weight_is_refused(kerastrain_plugin, tmp_path):
    """The table must name every weight of the GPT: an entry without the final norm is an error
    both ways, not a model with a default norm."""
    from dataclasses import replace

    from kerastrain.model.gpt import build_model
    from kerastrain.model.hf_import import open_pretrained
    from kerastrain.model.hf_weights import write_hf

    _, phi3 = _phi3_folder(tmp_path)
    partial = replace(PHI3, weights=tuple(w for w in PHI3.weights if w.hf != "model.norm.weight"))

    class Partial:
        @hookimpl
        def register_architectures(self, register):
            register(partial)

    kerastrain_plugin(Partial(), name="partial-phi3")
    pretrained = open_pretrained(str(phi3), 32)
    model = build_model(pretrained.config)
    with pytest.raises(ConfigError, match="the phi3 entry names no tensor for 1 of the model's "
                                          "weights \\(final_norm/scale\\)"):
        pretrained.load_into(model)
    with pytest.raises(ConfigError, match="names no tensor for 1"):
        write_hf(model, partial, tmp_path)


@pytest.mark.torch
def test_the_new_family_entry_gives_transformers_phi3_logits(kerastrain_plugin, tmp_path):
    """transformers' own Phi3ForCausalLM on the fused folder, against the model the entry built."""
    import torch
    import transformers

    from kerastrain.model.gpt import build_model
    from kerastrain.model.hf_import import open_pretrained

    _, phi3 = _phi3_folder(tmp_path)
    kerastrain_plugin(Phi3Plugin(), name="phi3-plugin")
    pretrained = open_pretrained(str(phi3), 32)
    model = build_model(pretrained.config)
    pretrained.load_into(model)
    ids = np.random.default_rng(1).integers(0, pretrained.config.vocab_size, (2, 24))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(phi3), dtype=torch.float32).eval()
    assert type(hf).__name__ == "Phi3ForCausalLM"
    with torch.no_grad():
        theirs = hf(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(ids.astype("int32"))), theirs, atol=1e-4)


def test_gpt2_tensors_read_with_or_without_the_transformer_prefix(tmp_path):
    """transformers' GPT2LMHeadModel saves ``transformer.h.0...``, the Hub's original GPT-2 files
    ``h.0...``: both import to the same weights, which export back bit-equal."""
    from safetensors.numpy import load_file, save_file

    from kerastrain.model.families import importing_family
    from kerastrain.model.gpt import build_model
    from kerastrain.model.hf_weights import config_from_hf, load_hf_weights, write_hf

    family = importing_family("gpt2")
    cfg = ModelConfig(vocab_size=50, seq_len=16, d_model=32, num_layers=2, num_heads=4, d_ff=48,
                      dropout_rate=0.0, use_rmsnorm=False, use_swiglu=False, use_rope=False,
                      activation="gelu_tanh", use_bias=True)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(0, 0.2, v.shape).astype("float32"))
    prefixed, bare = tmp_path / "prefixed", tmp_path / "bare"
    prefixed.mkdir(), bare.mkdir()
    write_hf(model, family, prefixed)
    tensors = load_file(str(prefixed / "model.safetensors"))
    assert all(name.startswith("transformer.") for name in tensors)
    save_file({k.removeprefix("transformer."): v for k, v in tensors.items()},
              str(bare / "model.safetensors"))
    config = json.loads((prefixed / "config.json").read_text())
    assert config_from_hf(family, config, 16) == cfg.replace(norm_epsilon=1e-5)  # spelt out
    for folder in (prefixed, bare):
        again = build_model(cfg)
        load_hf_weights(again, folder, family)
        for ours, theirs in zip(model.weights, again.weights, strict=True):
            np.testing.assert_array_equal(np.asarray(ours.value), np.asarray(theirs.value))
