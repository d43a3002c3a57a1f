"""The run's configuration: one typed object built from the options of ``kerastrain run``.

``ModelConfig`` is the model's part of it (what ``model_config.json`` holds and ``build_model``
takes); it lives here, in the core, because every layer above reads it.

It is written to ``OUTPUT_DIR/run_config.json`` so that a run can be reproduced and resumed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from kerastrain.errors import ConfigError


@dataclass
class ModelConfig:
    """The GPT's shape and switches (see :func:`kerastrain.model.gpt.build_model`).

    ``use_lora``/``lora_rank`` describe training (the caller applies LoRA after building);
    ``mixed_precision`` selects the ``mixed_bfloat16`` policy (:func:`kerastrain.model.gpt.apply_precision`).
    """

    vocab_size: int = 16000
    seq_len: int = 256
    d_model: int = 512
    num_layers: int = 6
    num_heads: int = 8
    d_ff: int = 2048
    dropout_rate: float = 0.1
    activation: str = "gelu"  # the plain MLP's activation (with use_swiglu=False); gelu_tanh: GPT-2's
    use_rmsnorm: bool = True
    use_swiglu: bool = True
    use_rope: bool = True
    tie_embeddings: bool = True
    use_lora: bool = False
    lora_rank: int = 8
    mixed_precision: bool = False
    use_bias: bool = False  # biases in every projection (GPT-2 checkpoints have them)
    # Pretrained families (``--init-from`` a Llama folder): grouped-query attention, RoPE base and
    # Llama 3 RoPE scaling, norm epsilon (None: 1e-6 for RMSNorm, 1e-5 for LayerNorm).
    num_kv_heads: int | None = None
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # factor, low_freq_factor, high_freq_factor, original_max_position_embeddings
    norm_epsilon: float | None = None
    remat: bool = False  # recompute each block's activations in the backward pass (--remat)

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
        if self.num_kv_heads is not None and (
                self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads):
            raise ConfigError(f"num_kv_heads {self.num_kv_heads} must divide --num-heads {self.num_heads}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError("--dropout-rate must be in [0, 1)")
        if self.activation not in ("relu", "gelu", "gelu_tanh", "silu"):
            raise ConfigError("--activation must be one of relu, gelu, gelu_tanh, silu")
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


@dataclass
class DataConfig:
    dataset_id: str | None = None
    dataset_config: str | None = None
    text_column: str = "text"
    split: str = "train"
    val_split: str | None = None
    data_dir: str | None = None
    max_train_examples: int | None = None
    max_val_examples: int | None = None
    streaming: bool = True
    shuffle_buffer_size: int = 10000
    window_shuffle_size: int = 1024  # packed windows shuffled across documents; 0/1: off
    data_workers: int = 1  # threads tokenizing side by side (same batches for any number)
    stride: int | None = None


@dataclass
class TokenizerConfig:
    kind: str = "bpe"
    vocab_size: int = 16000
    auto_vocab_size: bool = False
    min_vocab_size: int = 5000
    max_vocab_size: int = 50000
    train_examples: int = 10000
    retrain: bool = False
    path: str | None = None


@dataclass
class TrainConfig:
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    grad_clip: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95  # GPT-3 / Llama / nanoGPT; Keras' default 0.999 is for small nets
    adam_epsilon: float = 1e-8
    seed: int = 42
    init_from: str | None = None  # start from these weights (e.g. the base model for LoRA)


@dataclass
class OutputConfig:
    output_dir: str = "output_advanced"
    log_every: int = 10
    save_every: int = 1000
    eval_every: int = 500
    keep_last: int | None = None
    resume_from: str | None = None
    overwrite: bool = False
    trackers: list[str] = field(default_factory=list)  # experiment-tracker plugins (--tracker)
    sample_every: int | None = None  # None: at each evaluation when a terminal is attached; 0: off
    sample_prompt: str = "The"


@dataclass
class CloudConfig:
    provider: str | None = None
    bucket: str | None = None
    region: str | None = None
    prefix: str = "checkpoints"
    azure_sas_token: str | None = None  # secret: never written to disk or logs
    azure_account_name: str | None = None
    # --cloud-option KEY=VALUE pairs, handed to the backend's from_config (as this object).
    backend_options: dict[str, str] = field(default_factory=dict)
    # How long the end of a run waits for uploads before listing what did not upload (seconds).
    upload_timeout: float = 600.0

    SECRET_FIELDS = ("azure_sas_token",)


@dataclass
class DistributionConfig:
    """The device mesh and the processes of a run (``kerastrain.training.distribution``)."""

    data_parallel: int | None = None  # None: the devices the other axes leave
    fsdp: int | None = None
    tensor_parallel: int | None = None
    coordinator_address: str | None = None  # HOST:PORT of process 0 (multi-process runs)
    num_processes: int | None = None
    process_id: int | None = None


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    preset: str | None = None
    distribution: DistributionConfig = field(default_factory=DistributionConfig)

    def validate(self) -> None:
        self.model.validate()
        t, d, o, tok = self.train, self.data, self.output, self.tokenizer
        for name, value in (
            ("--batch-size", t.batch_size),
            ("--epochs", t.epochs),
            ("--gradient-accumulation-steps", t.gradient_accumulation_steps),
            ("--log-every", o.log_every),
            ("--save-every", o.save_every),
            ("--eval-every", o.eval_every),
            ("--shuffle-buffer-size", d.shuffle_buffer_size),
            ("--data-workers", d.data_workers),
            ("--tokenizer-train-examples", tok.train_examples),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        for name, value in (
            ("--max-steps", t.max_steps),
            ("--max-train-examples", d.max_train_examples),
            ("--max-val-examples", d.max_val_examples),
            ("--keep-last", o.keep_last),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if o.sample_every is not None and o.sample_every < 0:
            raise ConfigError(f"--sample-every must be 0 (off) or more, got {o.sample_every}")
        if t.learning_rate <= 0:
            raise ConfigError(f"--learning-rate must be positive, got {t.learning_rate}")
        if t.weight_decay < 0 or t.warmup_steps < 0 or t.grad_clip < 0:
            raise ConfigError("--weight-decay, --warmup-steps and --grad-clip cannot be negative")
        if not (0 <= t.adam_beta1 < 1 and 0 <= t.adam_beta2 < 1):
            raise ConfigError("--adam-beta1 and --adam-beta2 must be in [0, 1)")
        if t.adam_epsilon <= 0:
            raise ConfigError(f"--adam-epsilon must be positive, got {t.adam_epsilon}")
        if d.window_shuffle_size < 0:
            raise ConfigError(f"--window-shuffle-size cannot be negative, got {d.window_shuffle_size}")
        if d.stride is not None and not 1 <= d.stride <= self.model.seq_len:
            raise ConfigError(f"--stride must be between 1 and --seq-len ({self.model.seq_len})")
        if tok.min_vocab_size > tok.max_vocab_size:
            raise ConfigError("--min-vocab-size is larger than --max-vocab-size")
        if self.cloud.upload_timeout < 0:
            raise ConfigError("--upload-timeout must be 0 or more seconds")
        if self.cloud.provider and not self.cloud.bucket:
            raise ConfigError("--cloud-provider needs --cloud-bucket (the bucket or container)")

    def to_dict(self, redact: bool = True) -> dict:
        data = dataclasses.asdict(self)
        if redact:
            for name in CloudConfig.SECRET_FIELDS:
                if data["cloud"].get(name):
                    data["cloud"][name] = "<redacted>"
        return data

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        sections = {
            "data": DataConfig,
            "tokenizer": TokenizerConfig,
            "train": TrainConfig,
            "output": OutputConfig,
            "cloud": CloudConfig,
            "distribution": DistributionConfig,
        }
        kwargs = {}
        for name, klass in sections.items():
            known = {f.name for f in dataclasses.fields(klass)}
            kwargs[name] = klass(**{k: v for k, v in data.get(name, {}).items() if k in known})
        kwargs["model"] = ModelConfig.from_dict(data.get("model", {}))
        return cls(**kwargs, preset=data.get("preset"))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
