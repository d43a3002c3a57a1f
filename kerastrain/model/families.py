"""The model-family table: each family is one :class:`Family` entry mapping Hugging Face
``config.json`` keys and safetensors weight names onto switches and layers of kerastrain's one
GPT (:mod:`kerastrain.model.gpt`). Import (``--init-from``), export, the planner
(``plan --init-from``), ``generate`` on a folder and LoRA's targets all read this table through
:mod:`kerastrain.model.hf_weights`; nothing else knows a family.

An entry says:

- ``switches``: the GPT options the family fixes (Gemma: GeGLU, scaled embeddings, sandwich norms);
- ``keys``: the ``config.json`` keys it reads and writes, each onto one option (:class:`Key`); an
  option neither fixed, keyed nor in ``sets`` must keep its default for a model to export as the
  family, so a new switch of the GPT is refused by every family until an entry names it;
- ``weights``: the tensors by name (:class:`Weight`), per layer with ``{i}``: transposed
  (``torch.nn.Linear`` stores ``(out, in)``), fused (GPT-2's ``c_attn`` is query, key and value
  side by side), or Gemma's ``1 + w`` norms;
- ``keras_hub``: whether keras-hub's preset format is an export target (keras-hub then reads our
  Hugging Face folder with its own converter; the dict gives what its converter drops).

Entries are registered like a plugin's (``register_architectures``); a plugin adds a family with
one more entry. No keras import here: ``kerastrain plan`` and ``presets`` stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kerastrain.config import ModelConfig
from kerastrain.errors import ConfigError
from kerastrain.hookspecs import hookimpl

# The GPT's projection layers inside a block (LoRA's targets), by layer name -> path in a block.
PROJECTIONS = {"query": "attention.query", "key": "attention.key", "value": "attention.value",
               "output": "attention.output_projection", "gate": "mlp.gate", "up": "mlp.up",
               "down": "mlp.down"}
# ModelConfig fields every family holds (shape and training); every other field is a switch.
NEUTRAL = frozenset(("vocab_size", "seq_len", "d_model", "num_layers", "num_heads", "d_ff",
                     "dropout_rate", "use_lora", "lora_rank", "mixed_precision", "remat"))
_MISSING = object()


@dataclass(frozen=True)
class Key:
    """One ``config.json`` key (``hf``; more names: aliases read too) and the option it sets.

    ``values`` maps Hugging Face values to ours (the first key of a value is written); ``read``
    (value, options read so far) and ``write`` (ModelConfig) convert otherwise; ``holds`` says
    which of our values the family can write. ``field=None``: a constant ``const`` written on
    export; a folder with another value is refused."""

    hf: str | tuple[str, ...]
    field: str | None = None
    default: object = None
    values: dict | None = None
    read: Callable | None = None
    write: Callable | None = None
    holds: Callable | None = None
    const: object = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.hf,) if isinstance(self.hf, str) else self.hf


@dataclass(frozen=True)
class Weight:
    """One tensor: our variable(s) (paths from the GPT; ``{i}``: every block) and its name.

    ``transform``: ``"T"`` transposes (``nn.Linear`` weights); ``"+1"`` is Gemma's norm (it
    multiplies by ``1 + w``: our scale holds ``1 + w``). Several paths: fused along their output
    axis. ``when``: a switch the tensor needs (``"!tie_embeddings"``: untied only).
    ``head_rows``: the tensor may have more rows than ours (learned positions: the first kept)."""

    ours: str | tuple[str, ...]
    hf: str
    transform: str = ""
    when: str = ""
    head_rows: bool = False

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.ours,) if isinstance(self.ours, str) else self.ours


@dataclass(frozen=True)
class Family:
    """One model family: how its Hugging Face folders map onto the GPT, both ways."""

    name: str
    description: str
    model_types: tuple[str, ...] = ()  # config.json "model_type" values it imports (first: written)
    hf_class: str = ""  # transformers class written to "architectures"
    switches: dict = field(default_factory=dict)
    keys: tuple[Key, ...] = ()
    weights: tuple[Weight, ...] = ()
    prefix: str = ""  # the base model's prefix, absent from some folders (GPT-2's "transformer.")
    check: Callable | None = None  # (config.json, options read) -> None: what keys cannot say
    keras_hub: Callable | None = None  # (ModelConfig) -> from_preset kwargs; None: hf only
    exports: bool = True
    # Options an import (and a preset naming the family) sets that an export does not require:
    # GPT-2's biases (a GPT without them exports zeros).
    sets: dict = field(default_factory=dict)

    @property
    def imports(self) -> bool:
        return bool(self.model_types and self.weights)

    @property
    def defaults(self) -> dict:
        """The options a preset naming this family takes."""
        return {**self.switches, **self.sets}


# --- Keys shared by the families ---------------------------------------------------------------

def _eps(cfg: ModelConfig) -> float:
    return cfg.norm_epsilon if cfg.norm_epsilon is not None else 1e-6 if cfg.use_rmsnorm else 1e-5


def _rope_scaling(*kinds: str) -> Key:
    """``rope_scaling`` of the given kinds ("llama3": Llama 3's frequency scaling, "linear")."""

    def kind(scaling):
        return scaling.get("rope_type", scaling.get("type", "llama3"))

    def read(value, _):
        if not value:
            return None
        if kind(value) not in kinds:
            raise ConfigError(f"RoPE scaling {kind(value)!r}, which kerastrain's GPT does not have")
        if kind(value) == "linear":
            return {"rope_type": "linear", "factor": float(value["factor"])}
        return {k: value[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                      "original_max_position_embeddings")}

    def write(cfg):
        s = cfg.rope_scaling
        return s if not s or kind(s) == "linear" else {"rope_type": "llama3", **s}

    return Key("rope_scaling", "rope_scaling", read=read, write=write,
               holds=lambda s: not s or kind(s) in kinds)


LLAMA_KEYS = (
    Key("vocab_size", "vocab_size"), Key("hidden_size", "d_model"),
    Key("intermediate_size", "d_ff"), Key("num_hidden_layers", "num_layers"),
    Key("num_attention_heads", "num_heads"),
    Key("num_key_value_heads", "num_kv_heads", write=lambda c: c.num_kv_heads or c.num_heads),
    Key("head_dim", "head_dim", write=lambda c: c.attention_head_dim),
    Key("rms_norm_eps", "norm_epsilon", 1e-6, read=lambda v, _: float(v), write=_eps),
    Key("hidden_act", "glu_activation", "silu", values={"silu": "silu"}),
    Key("max_position_embeddings", write=lambda c: c.seq_len),
    Key("attention_dropout", write=lambda c: 0.0),
)


def _llama_keys(theta: float = 10000.0, tied: bool = False, scaling: tuple = ()) -> tuple:
    return (*LLAMA_KEYS,
            Key("rope_theta", "rope_theta", theta, read=lambda v, _: float(v)),
            Key("tie_word_embeddings", "tie_embeddings", tied, read=lambda v, _: bool(v)),
            _rope_scaling(*scaling))


def _layer(name: str, hf: str, transform: str = "T", when: str = "") -> Weight:
    return Weight(f"blocks.{{i}}.{name}", f"model.layers.{{i}}.{hf}", transform, when)


def _llama_weights(norm: str = "", extra: tuple = ()) -> tuple:
    """Llama's tensor names (and Qwen's, Mistral's, Gemma's: ``extra`` rows, ``norm`` "+1")."""
    mlp_norm = () if norm else (
        _layer("mlp_norm.scale", "post_attention_layernorm.weight", ""),)
    return (
        Weight("token_embedding.embeddings", "model.embed_tokens.weight"),
        Weight("token_embedding.reverse_embeddings", "lm_head.weight", "T", "!tie_embeddings"),
        Weight("final_norm.scale", "model.norm.weight", norm),
        *(_layer(f"{path}.kernel", f"{hf}.weight") for path, hf in (
            (PROJECTIONS["query"], "self_attn.q_proj"), (PROJECTIONS["key"], "self_attn.k_proj"),
            (PROJECTIONS["value"], "self_attn.v_proj"), (PROJECTIONS["output"], "self_attn.o_proj"),
            (PROJECTIONS["gate"], "mlp.gate_proj"), (PROJECTIONS["up"], "mlp.up_proj"),
            (PROJECTIONS["down"], "mlp.down_proj"))),
        _layer("attention_norm.scale", "input_layernorm.weight", norm),
        *mlp_norm, *extra)


_LLAMA_SWITCHES = dict(use_rmsnorm=True, use_swiglu=True, use_rope=True, use_bias=False)
_QKV_BIAS = tuple(_layer(f"attention.{n}.bias", f"self_attn.{h}_proj.bias", "")
                  for n, h in (("query", "q"), ("key", "k"), ("value", "v")))


def _qk_norm(norm: str = "") -> tuple:
    return (_layer("attention.query_norm.scale", "self_attn.q_norm.weight", norm),
            _layer("attention.key_norm.scale", "self_attn.k_norm.weight", norm))


_GEMMA_NORMS = (_layer("post_attention_norm.scale", "post_attention_layernorm.weight", "+1"),
                _layer("mlp_norm.scale", "pre_feedforward_layernorm.weight", "+1"),
                _layer("post_mlp_norm.scale", "post_feedforward_layernorm.weight", "+1"))


# --- Family-specific readings ------------------------------------------------------------------

_QWEN_WINDOW = (Key("use_sliding_window", write=lambda c: False),
                Key("max_window_layers", write=lambda c: c.num_layers))


def _qwen_check(config: dict, fields: dict) -> None:
    window = config.get("sliding_window")
    if config.get("use_sliding_window") and window and fields["seq_len"] > window:
        raise ConfigError(f"this Qwen model attends within a sliding window of {window} "
                          f"tokens in some layers; train with --seq-len {window} or less")


def _layer_pattern(default: int | None):
    """Gemma's ``layer_types`` as "every Nth layer is global" (None: every layer is local)."""

    def read(types, _):
        if not types:
            return default
        full = [i for i, t in enumerate(types) if t == "full_attention"]
        if not full:
            return None
        n = full[0] + 1
        if any(((i + 1) % n == 0) != (t == "full_attention") for i, t in enumerate(types)):
            raise ConfigError(f"layer_types {types} is not one global layer every N; "
                              "kerastrain's GPT cannot hold it")
        return n

    def write(cfg):
        return ["sliding_attention" if cfg.sliding_window is not None and (
            cfg.sliding_window_pattern is None or (i + 1) % cfg.sliding_window_pattern)
            else "full_attention" for i in range(cfg.num_layers)]

    return Key("layer_types", "sliding_window_pattern", read=read, write=write)


def _gemma_keys(name: str) -> tuple:
    gemma3 = name == "gemma3"
    keys = [k for k in LLAMA_KEYS if k.field != "glu_activation"] + [
        Key(("hidden_activation", "hidden_act"), "glu_activation", "gelu_pytorch_tanh",
            values={"gelu_pytorch_tanh": "gelu_tanh"}),
        Key("rope_theta", "rope_theta", 1e6 if gemma3 else 10000.0, read=lambda v, _: float(v)),
        Key("tie_word_embeddings", "tie_embeddings", True, read=lambda v, _: bool(v)),
        Key("attention_bias", const=False),
        Key("attn_logit_softcapping", "attn_softcap"),
        Key("final_logit_softcapping", "final_softcap"),
        Key("query_pre_attn_scalar", "query_pre_attn_scalar", 256, read=lambda v, _: float(v),
            # transformers 5 takes an int (and refuses the folder otherwise)
            write=lambda c: int(c.query_pre_attn_scalar or c.attention_head_dim),
            holds=lambda v: v is None or float(v).is_integer()),
        Key("sliding_window", "sliding_window", write=lambda c: c.sliding_window or c.seq_len),
        _layer_pattern(6 if gemma3 else 2), _rope_scaling(*(("linear",) if gemma3 else ()))]
    if gemma3:
        keys.append(Key("rope_local_base_freq", "rope_local_theta", 10000.0,
                        read=lambda v, _: float(v), write=lambda c: c.rope_local_theta or c.rope_theta))
    return tuple(keys)


def _llama_keras_hub(cfg: ModelConfig) -> dict:
    if _canonical(cfg).head_dim is not None:
        raise ConfigError("keras-hub's Llama 3 has head size d_model / heads only; export this "
                          "model with --format hf")
    return {"layer_norm_epsilon": _eps(cfg)}  # its converter drops rms_norm_eps


def _gpt2_keras_hub(cfg: ModelConfig) -> dict:
    # keras-hub's GPT-2 computes the tanh GELU with LayerNorm epsilon 1e-5, whatever the folder says.
    if cfg.activation != "gelu_tanh" or _eps(cfg) != 1e-5:
        raise ConfigError("keras-hub's GPT-2 computes the tanh GELU with epsilon 1e-5 only; "
                          "export this model with --format hf")
    return {"intermediate_dim": cfg.d_ff}  # its converter assumes 4 x hidden size


def _gpt2_weights() -> tuple:
    h = "transformer.h.{i}."
    rows = [Weight("token_embedding.embeddings", "transformer.wte.weight"),
            Weight("position_embedding.position_embeddings", "transformer.wpe.weight", head_rows=True),
            Weight("final_norm.gamma", "transformer.ln_f.weight"),
            Weight("final_norm.beta", "transformer.ln_f.bias")]
    fused = tuple(f"blocks.{{i}}.{PROJECTIONS[n]}" for n in ("query", "key", "value"))
    for part, suffix in (("kernel", "weight"), ("bias", "bias")):  # Conv1D: (in, out) as ours
        rows += [Weight(tuple(f"{p}.{part}" for p in fused), f"{h}attn.c_attn.{suffix}"),
                 Weight(f"blocks.{{i}}.{PROJECTIONS['output']}.{part}", f"{h}attn.c_proj.{suffix}"),
                 Weight(f"blocks.{{i}}.{PROJECTIONS['up']}.{part}", f"{h}mlp.c_fc.{suffix}"),
                 Weight(f"blocks.{{i}}.{PROJECTIONS['down']}.{part}", f"{h}mlp.c_proj.{suffix}")]
    for ours, theirs in (("attention_norm", "ln_1"), ("mlp_norm", "ln_2")):
        rows += [Weight(f"blocks.{{i}}.{ours}.gamma", f"{h}{theirs}.weight"),
                 Weight(f"blocks.{{i}}.{ours}.beta", f"{h}{theirs}.bias")]
    return tuple(rows)


# --- The table ---------------------------------------------------------------------------------

FAMILIES = (
    Family("gpt", "kerastrain's configurable GPT (trains; exports as the first family below "
           "that holds it)", exports=False),
    Family("llama3", "Llama / Llama 3 / SmolLM: RMSNorm, SwiGLU, RoPE, no biases "
           "(LlamaForCausalLM)", ("llama",), "LlamaForCausalLM", _LLAMA_SWITCHES,
           (*_llama_keys(scaling=("llama3",)), Key("attention_bias", const=False),
            Key("mlp_bias", const=False)),
           _llama_weights(),
           keras_hub=_llama_keras_hub),
    Family("gpt2", "GPT-2: LayerNorm, GELU, learned positions, tied embeddings, biases "
           "(GPT2LMHeadModel)", ("gpt2",), "GPT2LMHeadModel",
           dict(use_rmsnorm=False, use_swiglu=False, use_rope=False, tie_embeddings=True),
           (Key("vocab_size", "vocab_size"), Key("n_embd", "d_model"),
            Key("n_layer", "num_layers"), Key("n_head", "num_heads"),
            Key("n_inner", "d_ff", read=lambda v, f: v or 4 * f["d_model"]),
            Key("n_positions", "seq_len", 1024, read=lambda v, f: min(v, f["seq_len"])),
            Key("layer_norm_epsilon", "norm_epsilon", 1e-5, read=lambda v, _: float(v), write=_eps),
            Key("activation_function", "activation", "gelu_new",
                values={"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}),
            Key("tie_word_embeddings", "tie_embeddings", True),
            Key("scale_attn_weights", const=True),
            Key("scale_attn_by_inverse_layer_idx", const=False),
            Key("reorder_and_upcast_attn", const=False),
            *(Key(k, write=lambda c: 0.0) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop"))),
           _gpt2_weights(), prefix="transformer.", keras_hub=_gpt2_keras_hub,
           sets=dict(use_bias=True, activation="gelu_tanh")),
    Family("mistral", "Mistral: a Llama with a sliding window on every layer "
           "(MistralForCausalLM)", ("mistral",), "MistralForCausalLM", _LLAMA_SWITCHES,
           (*_llama_keys(), Key("sliding_window", "sliding_window")),
           _llama_weights()),
    Family("qwen2", "Qwen 2 / 2.5: a Llama with q/k/v biases (Qwen2ForCausalLM)", ("qwen2",),
           "Qwen2ForCausalLM", {**_LLAMA_SWITCHES, "qkv_bias": True},
           (*_llama_keys(), *_QWEN_WINDOW), _llama_weights(extra=_QKV_BIAS), check=_qwen_check),
    Family("qwen3", "Qwen 3: a Llama with q/k RMSNorm and its own head size (Qwen3ForCausalLM); "
           "also where --qk-norm models export", ("qwen3",), "Qwen3ForCausalLM",
           {**_LLAMA_SWITCHES, "qk_norm": True},
           (*_llama_keys(), Key("attention_bias", const=False), *_QWEN_WINDOW),
           _llama_weights(extra=_qk_norm()), check=_qwen_check),
    Family("gemma2", "Gemma 2: scaled embeddings, (1+w) RMSNorm, sandwich norms, GeGLU, "
           "soft-capping, alternating sliding windows (Gemma2ForCausalLM)", ("gemma2",),
           "Gemma2ForCausalLM", dict(_LLAMA_SWITCHES, glu_activation="gelu_tanh",
                                     scale_embeddings=True, post_norms=True, tie_embeddings=True),
           _gemma_keys("gemma2"), _llama_weights("+1", _GEMMA_NORMS)),
    Family("gemma3", "Gemma 3 text: Gemma 2 with q/k norm instead of soft-caps, 5 local layers "
           "per global one, a local RoPE base (Gemma3ForCausalLM)", ("gemma3_text",),
           "Gemma3ForCausalLM", dict(_LLAMA_SWITCHES, glu_activation="gelu_tanh",
                                     scale_embeddings=True, post_norms=True, tie_embeddings=True,
                                     qk_norm=True),
           _gemma_keys("gemma3"), _llama_weights("+1", (*_GEMMA_NORMS, *_qk_norm("+1")))),
)


@hookimpl
def register_architectures(register):
    for family in FAMILIES:
        register(family)


# --- Reading the table -------------------------------------------------------------------------

def available_families() -> dict[str, Family]:
    from kerastrain.plugins import architectures

    return {name: reg.obj for name, reg in architectures().items()}


def _canonical(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with the defaults it spells out dropped (kv heads = heads, head size = d / heads)."""
    return cfg.replace(
        num_kv_heads=None if cfg.num_kv_heads == cfg.num_heads else cfg.num_kv_heads,
        head_dim=None if cfg.head_dim == cfg.d_model // cfg.num_heads else cfg.head_dim)


def _unused(cfg: ModelConfig) -> set[str]:
    """Options that do not change what ``cfg`` computes (the plain MLP's activation under SwiGLU)."""
    unused = {"activation"} if cfg.use_swiglu else {"glu_activation"}
    return unused if cfg.use_rope else unused | {"rope_theta", "rope_scaling", "rope_local_theta"}


def problems(cfg: ModelConfig, family: Family) -> list[str]:
    """What ``cfg`` has that ``family`` cannot hold (empty: it exports exactly), as options."""
    cfg, default = _canonical(cfg), ModelConfig()
    keyed = {k.field: k for k in family.keys if k.field}
    found = []
    for name in sorted(set(ModelConfig.__dataclass_fields__) - NEUTRAL - _unused(cfg)):
        value = getattr(cfg, name)
        if name in family.switches:
            if value != family.switches[name]:
                found.append(f"{name}={value!r} ({family.name} has {family.switches[name]!r})")
        elif name in keyed:
            key = keyed[name]
            if key.holds is not None and not key.holds(value) or (
                    key.values is not None and value not in key.values.values()):
                found.append(f"{name}={value!r}")
        elif name not in family.sets and value != getattr(default, name):
            found.append(f"{name}={value!r}")
    return found


def export_family(cfg: ModelConfig) -> Family:
    """The first registered family that holds ``cfg`` exactly; else a one-line error naming, for
    each, the options that prevent it."""
    reasons = []
    for family in available_families().values():
        if not (family.exports and family.weights):
            continue
        found = problems(cfg, family)
        if not found:
            return family
        reasons.append(f"{family.name} cannot because of " + ", ".join(found))
    raise ConfigError("no export format holds this model: " + "; ".join(reasons))


def importing_family(model_type: str) -> Family:
    """The family that imports a Hugging Face ``model_type``."""
    found = available_families().values()
    for family in found:
        if family.imports and model_type in family.model_types:
            return family
    supported = ", ".join(t for f in found if f.imports for t in f.model_types)
    raise ConfigError(f"no installed architecture imports model_type {model_type!r}; "
                      f"supported: {supported}")
