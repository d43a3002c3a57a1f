"""Model architectures as a plugin kind: what a model can be exported to and fine-tuned from.

kerastrain trains one network, the configurable GPT of :mod:`kerastrain.model.gpt`; an
:class:`Architecture` says how a family of pretrained models maps onto it, exactly: ``problems``
names the options of a GPT the family cannot hold. Two ways in and out:

- through the family's keras-hub backbone (``llama3``: Llama / Llama 3 / SmolLM and SmolLM2,
  which are ``LlamaForCausalLM``; ``gpt2``; import-only ``mistral``, exported back as the Llama
  it computes): ``to_keras_hub`` copies a GPT into the backbone (then keras-hub writes Hugging
  Face or preset folders), ``from_keras_hub`` gives the GPT configuration holding a backbone and
  ``load_weights`` copies the backbone's weights in;
- straight from and to Hugging Face folders (``qwen2``: Qwen 2 / 2.5, ``qwen3``, ``gemma2``,
  ``gemma3``: Gemma 3 text, ``gemma3_text``): ``from_hf_config``, ``load_hf_weights`` and
  ``write_hf`` (:mod:`kerastrain.model.hf_families` says why not through keras-hub).

Decision: every family maps onto switches of our one GPT (``qkv_bias``, ``qk_norm``,
``head_dim``, ``glu_activation``, ``scale_embeddings``, ``post_norms``, the soft-caps,
``query_pre_attn_scalar``, ``sliding_window`` and its pattern, ``rope_local_theta``), as LitGPT
does with one configurable model, rather than training inside keras-hub's backbones. What makes a
run a kerastrain run is written against the GPT's layers and variable paths: the chunked fused
loss (it reads the final norm's output and the output matrix), LoRA targets, the mesh's layout
rules, the remat block, Orbax checkpoints by path, the planner's exact parameter count and the
KV-cache ``generate``. A keras-hub backbone would need each of them again per family (and its
converters drop fields these families need). The switches are ordinary ``ModelConfig`` options,
so a model trained from scratch can use them (``--qk-norm``) and exports to the first family
that holds it (Qwen 3 for ``--qk-norm``).

A plugin can add another family by registering one more. This module imports quickly: keras-hub
is only imported inside the mapping functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kerastrain.config import ModelConfig
from kerastrain.errors import ConfigError
from kerastrain.hookspecs import hookimpl


@dataclass(frozen=True)
class Architecture:
    """One model family. Leave the callables ``None`` for what the family does not support."""

    name: str
    description: str
    hf_model_types: tuple[str, ...] = ()  # config.json "model_type" values it imports
    backbone_classes: tuple[str, ...] = ()  # keras-hub backbone class names it imports
    problems: Callable[[ModelConfig], list[str]] | None = None
    to_keras_hub: Callable | None = None  # (gpt) -> keras-hub backbone
    from_keras_hub: Callable | None = None  # (backbone, seq_len) -> ModelConfig
    load_weights: Callable | None = None  # (gpt, backbone) -> None
    defaults: dict = field(default_factory=dict)  # ModelConfig switches of a preset naming it
    extra: dict = field(default_factory=dict)
    # Families read and written straight from Hugging Face folders (no keras-hub backbone):
    from_hf_config: Callable | None = None  # (config.json dict, seq_len) -> ModelConfig
    load_hf_weights: Callable | None = None  # (gpt, folder) -> None
    write_hf: Callable | None = None  # (gpt, target folder, eos_id) -> None

    @property
    def imports(self) -> bool:
        return self.load_weights is not None or self.load_hf_weights is not None

    @property
    def exports(self) -> bool:
        return self.problems is not None and (
            self.to_keras_hub is not None or self.write_hf is not None)


def keras_hub_family(architecture: str) -> dict:
    """The callables of a built-in keras-hub family ("llama3", "gpt2"), for ``Architecture(...,
    **keras_hub_family(name))``; the mapping module is imported lazily."""

    def problems(cfg):
        from kerastrain.model.keras_hub_mapping import problems_for

        return problems_for(cfg, architecture)

    def to_keras_hub(gpt):
        from kerastrain.model.keras_hub_mapping import to_keras_hub as convert

        return convert(gpt, architecture)

    def from_keras_hub(backbone, seq_len):
        from kerastrain.model.keras_hub_mapping import config_from_keras_hub

        return config_from_keras_hub(backbone, seq_len)[1]

    def load_weights(gpt, backbone):
        from kerastrain.model.keras_hub_mapping import load_from_keras_hub

        load_from_keras_hub(gpt, backbone, architecture)

    return dict(problems=problems, to_keras_hub=to_keras_hub, from_keras_hub=from_keras_hub,
                load_weights=load_weights)


def hf_family(name: str) -> dict:
    """The callables of a family read and written as Hugging Face folders ("qwen2", "qwen3",
    "gemma2", "gemma3": :mod:`kerastrain.model.hf_families`, imported lazily)."""

    def problems(cfg):
        from kerastrain.model.hf_families import problems as found

        return found(cfg, name)

    def from_hf_config(config, seq_len):
        from kerastrain.model.hf_families import config_from_hf

        return config_from_hf(name, config, seq_len)

    def load_hf_weights(gpt, folder):
        from kerastrain.model.hf_families import load_hf_weights as load

        load(gpt, folder, name)

    def write_hf(gpt, target, eos_id=None):
        from kerastrain.model.hf_families import write_hf as write

        write(gpt, name, target, eos_id)

    from kerastrain.model.hf_families import _REQUIRED, FAMILIES  # no heavy imports there

    return dict(problems=problems, from_hf_config=from_hf_config, load_hf_weights=load_hf_weights,
                write_hf=write_hf, hf_model_types=(FAMILIES[name][0],),
                defaults=dict(use_rmsnorm=True, use_swiglu=True, use_rope=True, use_bias=False,
                              **_REQUIRED[name]))


@hookimpl
def register_architectures(register):
    register(Architecture(
        "gpt", "kerastrain's configurable GPT (trains; exports as llama3 or gpt2 when it fits)"))
    register(Architecture(
        "llama3", "Llama / Llama 3: RMSNorm, SwiGLU, RoPE, no biases (LlamaForCausalLM)",
        hf_model_types=("llama",), backbone_classes=("Llama3Backbone",),
        defaults=dict(use_rmsnorm=True, use_swiglu=True, use_rope=True, use_bias=False),
        **keras_hub_family("llama3")))
    register(Architecture(
        "gpt2", "GPT-2: LayerNorm, tanh GELU, learned positions, tied embeddings (GPT2LMHeadModel)",
        hf_model_types=("gpt2",), backbone_classes=("GPT2Backbone",),
        defaults=dict(use_rmsnorm=False, use_swiglu=False, use_rope=False, activation="gelu_tanh",
                      use_bias=True, tie_embeddings=True),
        **keras_hub_family("gpt2")))
    mistral = keras_hub_family("mistral")
    register(Architecture(  # import only: it runs, and exports, as a Llama of the same function
        "mistral", "Mistral: a Llama with a sliding window (import, within --seq-len <= window)",
        hf_model_types=("mistral",), backbone_classes=("MistralBackbone",),
        from_keras_hub=mistral["from_keras_hub"], load_weights=mistral["load_weights"]))
    register(Architecture(
        "qwen2", "Qwen 2 / 2.5: a Llama with q/k/v biases (Qwen2ForCausalLM)", **hf_family("qwen2")))
    register(Architecture(
        "qwen3", "Qwen 3: a Llama with q/k RMSNorm and its own head size (Qwen3ForCausalLM); "
        "also where --qk-norm models export", **hf_family("qwen3")))
    register(Architecture(
        "gemma2", "Gemma 2: scaled embeddings, (1+w) RMSNorm, sandwich norms, GeGLU, soft-capping, "
        "alternating sliding windows (Gemma2ForCausalLM)", **hf_family("gemma2")))
    register(Architecture(
        "gemma3", "Gemma 3 text: Gemma 2 with q/k norm instead of soft-caps, 5 local layers per "
        "global one, a local RoPE base (Gemma3ForCausalLM)", **hf_family("gemma3")))


def available_architectures() -> dict[str, Architecture]:
    from kerastrain.plugins import architectures

    return {name: reg.obj for name, reg in architectures().items()}


def export_architecture(cfg: ModelConfig) -> Architecture:
    """The first registered architecture that holds ``cfg`` exactly; else a one-line error naming,
    for each, the options that prevent it."""
    reasons = []
    for arch in available_architectures().values():
        if not arch.exports:
            continue
        found = arch.problems(cfg)
        if not found:
            return arch
        reasons.append(f"{arch.name} cannot because of " + ", ".join(found))
    raise ConfigError("no export format holds this model: " + "; ".join(reasons))


def importing_architecture(*, model_type: str | None = None, backbone=None) -> Architecture:
    """The architecture that imports a Hugging Face ``model_type`` or a keras-hub backbone."""
    found = available_architectures().values()
    for arch in found:
        if not arch.imports:
            continue
        if model_type is not None and model_type in arch.hf_model_types:
            return arch
        if backbone is not None and type(backbone).__name__ in arch.backbone_classes:
            return arch
    what = f"model_type {model_type!r}" if model_type is not None else type(backbone).__name__
    supported = ", ".join(t for a in found for t in (a.hf_model_types or a.backbone_classes)
                          if a.imports)
    raise ConfigError(f"no installed architecture imports {what}; supported: {supported}")
