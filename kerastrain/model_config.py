"""The model's configuration: what ``model_config.json`` holds and ``build_model`` takes."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from kerastrain.errors import ConfigError


@dataclass
class ModelConfig:
    """The GPT's shape and switches (see :func:`kerastrain.model.build_model`).

    ``use_lora``/``lora_rank`` describe training (the caller applies LoRA after building);
    ``mixed_precision`` selects the ``mixed_bfloat16`` policy (:func:`kerastrain.model.apply_precision`).
    """

    vocab_size: int = 16000
    seq_len: int = 256
    d_model: int = 512
    num_layers: int = 6
    num_heads: int = 8
    d_ff: int = 2048
    dropout_rate: float = 0.1
    activation: str = "gelu"  # the plain MLP's activation (with use_swiglu=False)
    use_rmsnorm: bool = True
    use_swiglu: bool = True
    use_rope: bool = True
    tie_embeddings: bool = True
    use_lora: bool = False
    lora_rank: int = 8
    mixed_precision: bool = False

    def validate(self) -> None:
        positive = ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.seq_len < 2:
            raise ConfigError("--seq-len must be at least 2 (one input token and one label)")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"--d-model {self.d_model} is not divisible by --num-heads {self.num_heads}; "
                "choose a head count that divides d_model"
            )
        if self.use_rope and (self.d_model // self.num_heads) % 2:
            raise ConfigError(
                f"RoPE needs an even head size, got d_model/num_heads = "
                f"{self.d_model // self.num_heads}; change --num-heads or pass --no-rope"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError("--dropout-rate must be in [0, 1)")
        if self.activation not in ("relu", "gelu", "silu"):
            raise ConfigError("--activation must be one of relu, gelu, silu")
        if self.use_lora and self.lora_rank < 1:
            raise ConfigError("--lora-rank must be at least 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
