"""The model's shape and switches, declared once: ``ModelConfig`` (what ``model_config.json`` holds
and ``build_model`` takes). Its option fields are the ``Model`` options of ``kerastrain run``
(see :mod:`kerastrain.config`, which makes it the run's ``model`` section); a preset supplies the
fields the user did not set.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from kerastrain.errors import ConfigError
from kerastrain.schema import at_least, option, positive, section_values

DEFAULT_VOCAB_SIZE = 16000  # when neither --vocab-size nor --auto-vocab-size nor a folder says
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")


def _model(default, help, **spec):
    """A model option: its command-line default is None, so a preset's value applies unless the
    user names the option; ``--help`` shows the built-in default."""
    spec.setdefault("shown_default", default)
    return option(default, help, cli_default_none=True, **spec)


@dataclass(frozen=True)
class ModelConfig:
    """The GPT's shape and switches (see :func:`kerastrain.model.gpt.build_model`).

    ``use_lora``/``lora_rank`` describe training (the caller applies LoRA after building);
    ``mixed_precision`` selects the ``mixed_bfloat16`` policy (:func:`kerastrain.model.gpt.apply_precision`).
    ``vocab_size`` is not an option: it is what the tokenizer has (see ``--vocab-size``).
    """

    vocab_size: int = DEFAULT_VOCAB_SIZE
    seq_len: int = _model(256, "Sequence length")
    d_model: int = _model(512, "Hidden size")
    num_layers: int = _model(6, "Transformer layers")
    num_heads: int = _model(8, "Attention heads")
    d_ff: int = _model(2048, "Feed-forward size")
    dropout_rate: float = _model(0.1, "Dropout rate")
    # the plain MLP's activation (with use_swiglu=False); gelu_tanh: GPT-2's
    activation: str = _model("gelu", "Plain-MLP activation (with --no-swiglu)", choices=ACTIVATIONS)
    use_rmsnorm: bool = _model(True, "RMSNorm (--no-rmsnorm: LayerNorm)",
                               flags=("--rmsnorm/--no-rmsnorm",))
    use_swiglu: bool = _model(True, "SwiGLU MLP (--no-swiglu: plain MLP)",
                              flags=("--swiglu/--no-swiglu",))
    use_rope: bool = _model(True, "RoPE (--no-rope: learned positions)", flags=("--rope/--no-rope",))
    tie_embeddings: bool = True
    use_lora: bool = _model(False, "Train LoRA adapters only")
    lora_rank: int = _model(8, "LoRA rank")
    mixed_precision: bool = _model(False, "bfloat16 compute, float32 weights and loss", flags=("--use-mixed-precision",))
    use_bias: bool = False  # biases in every projection (GPT-2 checkpoints have them)
    # Pretrained families (``--init-from`` a Llama folder): grouped-query attention, RoPE base and
    # Llama 3 RoPE scaling, norm epsilon (None: 1e-6 for RMSNorm, 1e-5 for LayerNorm).
    num_kv_heads: int | None = None
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # factor, low_freq_factor, high_freq_factor, original_max_position_embeddings
    norm_epsilon: float | None = None
    # The pretrained families' switches (kerastrain.model.families); defaults: a Llama.
    head_dim: int | None = _model(None, "Head size", shown_default="d_model / num_heads",
                                  check=at_least(1))
    qkv_bias: bool = _model(False, "Biases on query, key and value (Qwen 2)")
    qk_norm: bool = _model(False, "RMSNorm on each head's queries and keys (Qwen 3, Gemma 3)")
    glu_activation: str = _model("silu", "Gated MLP activation (gelu_tanh: GeGLU, Gemma)",
                                 choices=("silu", "gelu_tanh"))
    scale_embeddings: bool = _model(False, "Embeddings times sqrt(d_model) (Gemma)")
    post_norms: bool = _model(False, "Norms on attention and MLP outputs too (Gemma 2/3)")
    attn_softcap: float | None = _model(None, "Soft-cap attention logits (Gemma 2)", check=positive)
    final_softcap: float | None = _model(None, "Soft-cap output logits (Gemma 2)", check=positive)
    query_pre_attn_scalar: float | None = _model(None, "Attention scale: this ** -0.5 (Gemma)",
                                                 shown_default="head_dim", check=positive)
    sliding_window: int | None = _model(None, "Local layers see this many latest tokens",
                                        check=at_least(1))
    sliding_window_pattern: int | None = _model(None, "Every Nth layer is global (Gemma 3: 6)",
                                                shown_default="all local", check=at_least(1))
    rope_local_theta: float | None = _model(None, "RoPE base of local layers (Gemma 3)",
                                            shown_default="rope_theta", check=positive)
    remat: bool = _model(False, "Recompute each block's activations in the backward pass: less "
                         "memory, ~1/3 more compute")

    def validate(self) -> None:
        positive_fields = ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff")
        for name in positive_fields:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.seq_len < 2:
            raise ConfigError("--seq-len must be at least 2 (one input token and one label)")
        if self.head_dim is None and self.d_model % self.num_heads:
            raise ConfigError(
                f"--d-model {self.d_model} is not divisible by --num-heads {self.num_heads}; "
                "choose a head count that divides d_model"
            )
        if self.use_rope and self.attention_head_dim % 2:
            raise ConfigError(f"RoPE needs an even head size, got {self.attention_head_dim}; "
                              "change --num-heads (or --head-dim) or pass --no-rope")
        if self.num_kv_heads is not None and (
                self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads):
            raise ConfigError(f"num_kv_heads {self.num_kv_heads} must divide --num-heads {self.num_heads}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError("--dropout-rate must be in [0, 1)")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"--activation must be one of {', '.join(ACTIVATIONS)}")
        if self.use_lora and self.lora_rank < 1:
            raise ConfigError("--lora-rank must be at least 1")

    @property
    def attention_head_dim(self) -> int:  # head_dim, else d_model / num_heads
        return self.head_dim or self.d_model // self.num_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return section_values(cls, data)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
