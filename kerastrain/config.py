"""The run's configuration: one typed object built from the options of ``kerastrain run``.

It is written to ``OUTPUT_DIR/run_config.json`` so that a run can be reproduced and resumed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from kerastrain.errors import ConfigError
from kerastrain.model_config import ModelConfig


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


@dataclass
class CloudConfig:
    provider: str | None = None
    bucket: str | None = None
    region: str | None = None
    prefix: str = "checkpoints"
    azure_sas_token: str | None = None  # secret: never written to disk or logs
    azure_account_name: str | None = None

    SECRET_FIELDS = ("azure_sas_token",)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    preset: str | None = None

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
        if t.learning_rate <= 0:
            raise ConfigError(f"--learning-rate must be positive, got {t.learning_rate}")
        if t.weight_decay < 0 or t.warmup_steps < 0 or t.grad_clip < 0:
            raise ConfigError("--weight-decay, --warmup-steps and --grad-clip cannot be negative")
        if d.stride is not None and not 1 <= d.stride <= self.model.seq_len:
            raise ConfigError(f"--stride must be between 1 and --seq-len ({self.model.seq_len})")
        if tok.min_vocab_size > tok.max_vocab_size:
            raise ConfigError("--min-vocab-size is larger than --max-vocab-size")
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
        }
        kwargs = {}
        for name, klass in sections.items():
            known = {f.name for f in dataclasses.fields(klass)}
            kwargs[name] = klass(**{k: v for k, v in data.get(name, {}).items() if k in known})
        kwargs["model"] = ModelConfig.from_dict(data.get("model", {}))
        return cls(**kwargs, preset=data.get("preset"))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
