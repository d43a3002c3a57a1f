"""The run's configuration, declared once: every option of ``kerastrain run`` is a field here.

Each section is a frozen dataclass; a field made with :func:`kerastrain.schema.option` is a user
option, and its declaration (type, default, help, check) is the only one: the
click options, the config-file keys, ``run_config.json`` and the option reference are derived from
it (:mod:`kerastrain.schema`). A :class:`RunConfig` is what the user asked, frozen once parsed;
what the run resolves from it (the vocabulary the tokenizer reached, an ``--init-from`` folder's
shape, the mesh, the number of updates) is :class:`kerastrain.training.resolved.ResolvedRun`.

``ModelConfig`` (the model's shape, :mod:`kerastrain.model_config`) is the ``model`` section.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kerastrain.errors import ConfigError

# The model section (its own module; re-exported: ``from kerastrain.config import ModelConfig``).
from kerastrain.model_config import ACTIVATIONS, DEFAULT_VOCAB_SIZE, ModelConfig  # noqa: F401
from kerastrain.schema import (
    REDACTED,
    Declared,
    Secret,
    at_least,
    declared_fields,
    fraction,
    not_negative,
    option,
    positive,
    redacted,
    section_values,
)


class PluginValues:
    """Sections take the options plugins declare for them (``register_run_options``) into
    ``extra``; they read like fields (``cloud.azure_sas_token``)."""

    def __getattr__(self, name: str) -> Any:
        extra = self.__dict__.get("extra") or {}
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no option {name!r}")


@dataclass(frozen=True)
class DataConfig(PluginValues):
    dataset_id: list[str] = option(help="Dataset: hub id, local path/glob, bucket URL (s3://, "
                                   "gs://, az://, https://), hf:ID, tfds:NAME, or a plugin's "
                                   "NAME:...; repeat it to mix datasets (--mixture-weights)", default_factory=list,
                                   shown_default="the embedded corpus")
    mixture_weights: list[float] = option(help="Weights of the repeated --dataset-id, e.g. "
                                          "0.7,0.3 (default: equal)",
                                          default_factory=list, metavar="W,W,...")
    datasets: list[dict] = option(help="One dataset of a mixture with its own settings: "
                                  "id=...,weight=...,text_column=...,split=...,config=...,"
                                  "format=...,name=... (or a JSON object); repeatable; a "
                                  "[[dataset]] table each in a config file",
                                  default_factory=list, flags=("--dataset",),
                                  keys=("dataset", "datasets"),
                                  metavar="KEY=VALUE,...")
    mixture_exhausted: str = option("end-epoch", "When one dataset of a mixture runs out: end "
                                    "the epoch (all start again), restart that one, or drop it "
                                    "(the others share its weight)",
                                    choices=("end-epoch", "restart", "drop"))
    data_options: dict[str, str] = option(
        help="A storage setting for data in a bucket, handed to fsspec over what the "
        "environment gives (endpoint_url=..., anon=true, client_kwargs.region_name=...; "
        "repeatable; credentials among them are never written to disk)",
        default_factory=dict, flags=("--data-option",), metavar="KEY=VALUE")
    text_column: str = option("text", "Column holding the text")
    dataset_config: str | None = option(None, "Dataset configuration/subset")
    split: str = option("train", "Training split")
    val_split: str | None = option(None, "Validation split")
    data_dir: str | None = option(None, "Data directory (TFDS)")
    max_train_examples: int | None = option(None, "Limit training documents",
                                            check=at_least(1))
    max_val_examples: int | None = option(None, "Limit validation documents",
                                          check=at_least(1))
    streaming: bool = option(True, "Stream the dataset, or load it into memory", flags=("--streaming/--no-streaming",))
    shuffle_buffer_size: int = option(10000, "Shuffle buffer (documents); 1 disables shuffling", check=at_least(1))
    window_shuffle_size: int = option(1024, "Shuffle buffer (packed windows) so a batch mixes "
                                      "many documents; 0 disables",
                                      check=not_negative)
    data_workers: int = option(1, "Data worker processes (Grain's; each reads every N-th "
                               "document: a resume keeps the number)",
                               check=at_least(1))
    stride: int | None = option(None, "Window stride",
                                shown_default="seq_len")
    data_format: str = option("auto", "How records become examples: text, chat, "
                              "prompt-completion, a plugin's, or auto (from the first record's "
                              "columns)")
    chat_template: str | None = option(None, "Jinja chat template file (or a model folder)",
                                       shown_default="the --init-from folder's, else ChatML")
    chat_template_kwargs: dict[str, str] = option(
        help="A variable the chat template renders with, as apply_chat_template's keyword "
        "arguments (enable_thinking=false; the value read as JSON where it is; repeatable)", default_factory=dict, flags=("--chat-template-kwargs",),
        metavar="KEY=VALUE")
    train_on_prompt: bool = option(False, "Train on every token of a conversation or prompt, "
                                   "not only the assistant turns / completion")
    document_masking: bool = option(False, "Packed plain-text documents do not attend to each "
                                    "other; positions restart at each (always on for chat and "
                                    "prompt-completion)")
    packing: bool = option(True, "Pack several examples into each row (with document masking); "
                           "off: one example per row, the rest padding",
                           flags=("--packing/--no-packing",))
    overlong: str = option("truncate", "An example longer than --seq-len: truncate or drop it", choices=("truncate", "drop"))
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TokenizerConfig(PluginValues):
    kind: str = option("bpe", "Tokenizer kind (bpe, bytes, or a plugin's)",
                       flags=("--tokenizer",), keys=("tokenizer_kind",))
    auto_vocab_size: bool = option(False, "Choose the vocabulary size from the data")
    vocab_size: int | None = option(None, "Vocabulary size", check=at_least(1),
                                    shown_default=DEFAULT_VOCAB_SIZE)
    min_vocab_size: int = option(5000, "Smallest size for --auto-vocab-size")
    max_vocab_size: int = option(50000, "Largest size for --auto-vocab-size")
    train_examples: int = option(10000, "Documents to train the tokenizer on",
                                 flags=("--tokenizer-train-examples",), check=at_least(1))
    retrain: bool = option(False, "Train a new tokenizer even if one exists",
                           flags=("--retrain-tokenizer",))
    path: str | None = option(None, "Where to load/save the tokenizer",
                              flags=("--tokenizer-path",),
                              shown_default="OUTPUT_DIR/tokenizer.json")
    extra: dict = field(default_factory=dict)

    @property
    def asked_vocab_size(self) -> int:
        """The size to train at: ``--vocab-size``, else the built-in default."""
        return self.vocab_size or DEFAULT_VOCAB_SIZE


@dataclass(frozen=True)
class TrainConfig(PluginValues):
    epochs: int = option(3, "Epochs", check=at_least(1))
    max_steps: int | None = option(None, "Stop after this many updates (overrides --epochs)", check=at_least(1))
    batch_size: int = option(32, "Batch size per device", check=at_least(1))
    gradient_accumulation_steps: int = option(1, "Micro-batches per update",
                                              check=at_least(1))
    optimizer: str = option("adamw", "Optimizer (see `kerastrain plugins`: optimizer kinds)")
    lr_schedule: str = option("cosine", "Learning-rate schedule (see `kerastrain plugins`: "
                              "schedule kinds)")
    learning_rate: float = option(5e-4, "Peak learning rate", check=positive)
    weight_decay: float = option(0.01, "AdamW weight decay", check=not_negative)
    warmup_steps: int = option(500, "Warm-up steps (at most half the run; a resume keeps the "
                               "first warm-up)",
                               check=not_negative)
    grad_clip: float = option(1.0, "Global gradient-norm clip (0: off)",
                              check=not_negative)
    adam_beta1: float = option(0.9, "AdamW beta_1", check=fraction)
    adam_beta2: float = option(0.95, "AdamW beta_2 (LLM practice; Keras' default is 0.999)", check=fraction)
    adam_epsilon: float = option(1e-8, "AdamW epsilon (Keras' default is 1e-7)",
                                 check=positive)
    muon_lr: float = option(0.02, "Muon's peak learning rate for the hidden weight matrices "
                            "(--optimizer muon; the rest take --learning-rate)", check=positive)
    muon_weight_decay: float = option(0.01, "Muon's weight decay for the hidden weight matrices", check=not_negative)
    decay_fraction: float = option(0.2, "Share of the run the wsd schedule spends decaying", check=fraction)
    min_lr_ratio: float = option(0.1, "Learning rate at the end of the decay, as a share of the "
                                 "peak (cosine, wsd, linear)",
                                 check=fraction)
    z_loss: float = option(0.0, "Weight of the z-loss, (log of the softmax normaliser)^2 per "
                           "token, added to the loss (0: off; PaLM and OLMo use 1e-4)", check=not_negative)
    seed: int = option(42, "Random seed")
    objective: str = option("sft", "What the run trains: sft (the language-model loss), dpo, "
                            "simpo, orpo (preference pairs), or a plugin's (see `kerastrain "
                            "plugins`: objective kinds)")
    beta: float = option(0.1, "DPO / SimPO / ORPO beta (TRL's default)", check=positive)
    gamma: float = option(0.5, "SimPO's target reward margin gamma (TRL's simpo_gamma)", check=not_negative)
    label_smoothing: float = option(0.0, "DPO / SimPO label smoothing (conservative DPO), in "
                                    "[0, 0.5)",
                                    check=lambda v: None if 0 <= v < 0.5 else
                                    f"must be in [0, 0.5), got {v}")
    preference_from_scratch: bool = option(False, "Allow a preference objective without "
                                           "--init-from (it prefers nothing learnt)")
    init_from: str | None = option(None, "Start from this checkpoint, or a downloaded Hugging Face "
                                   "/ keras-hub model folder (Llama, SmolLM, Mistral, Qwen 2/3, "
                                   "Gemma 2/3, GPT-2): its weights, shape and tokenizer")
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OutputConfig(PluginValues):
    output_dir: str = option("output_advanced", "Output directory")
    log_every: int = option(10, "Log every N steps",
                            check=at_least(1))
    save_every: int = option(1000, "Checkpoint every N steps",
                             check=at_least(1))
    eval_every: int = option(500, "Validate every N steps",
                             check=at_least(1))
    keep_last: int | None = option(None, "Keep only the newest N step checkpoints", check=at_least(1))
    resume_from: str | None = option(None, "Checkpoint directory or URL: s3://, gs://, az://, "
                                     "file://, or any scheme a storage plugin registers (see "
                                     "`kerastrain plugins`)")
    overwrite: bool = option(False, "Start fresh instead of resuming in OUTPUT_DIR")
    trackers: list[str] = option(help="Also send the run to an experiment tracker plugin (mlflow, "
                                 "wandb); repeatable",
                                 default_factory=list, flags=("--tracker",), keys=("trackers",))
    sample_every: int | None = option(None, "Print and log a generated sample every N steps (0: "
                                      "never)", check=not_negative,
                                      shown_default="at each evaluation on a terminal")
    sample_prompt: str = option("The", "The fixed prompt of those samples")
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CloudConfig(PluginValues):
    """Where checkpoints are uploaded. Provider-specific settings are the provider plugin's
    options (``register_run_options``, kept in ``extra``) or ``--cloud-option`` pairs."""

    provider: str | None = option(None, "Upload checkpoints: s3, gcs, azure, or a plugin's", flags=("--cloud-provider",))
    bucket: str | None = option(None, "Bucket or container",
                                flags=("--cloud-bucket",))
    region: str | None = option(None, "Region", flags=("--cloud-region",))
    prefix: str = option("checkpoints", "Key prefix",
                         flags=("--cloud-prefix",))
    # --cloud-option KEY=VALUE pairs, handed to the backend's from_config (as this object).
    backend_options: dict[str, str] = option(
        help="A setting handed to the storage backend's from_config (repeatable; see the "
        "backend's docs)", default_factory=dict,
        flags=("--cloud-option",), metavar="KEY=VALUE", keys=("cloud_options",))
    upload_timeout: float = option(600.0, "Seconds the end of a run waits for uploads; then it "
                                   "lists what did not upload and exits 3",
                                   envvar="KERASTRAIN_UPLOAD_TIMEOUT", check=not_negative)
    extra: dict = field(default_factory=dict)

    def secrets(self) -> tuple[str, ...]:
        """The secret values this configuration holds (for :func:`kerastrain.storage.redact`)."""
        return tuple(v for v in self.extra.values() if isinstance(v, Secret))


@dataclass(frozen=True)
class DistributionConfig(PluginValues):
    """The device mesh and the processes of a run (``kerastrain.training.distribution``)."""

    data_parallel: int | None = option(None, "Data-parallel devices",
                                       shown_default="the devices --fsdp and --tensor-parallel "
                                       "leave", check=at_least(1))
    fsdp: int | None = option(None, "Devices that shard weights, gradients and optimizer state "
                              "(ZeRO-3)", shown_default=1, check=at_least(1))
    tensor_parallel: int | None = option(None, "Devices that split attention heads and MLP "
                                         "columns", shown_default=1,
                                         check=at_least(1))
    coordinator_address: str | None = option(None, "HOST:PORT of process 0 for a multi-process "
                                             "run")
    num_processes: int | None = option(None, "Processes of a multi-process run", check=at_least(1))
    process_id: int | None = option(None, "This process's id, 0 .. num-processes - 1", check=not_negative)
    extra: dict = field(default_factory=dict)


SECTIONS = {"data": DataConfig, "tokenizer": TokenizerConfig, "model": ModelConfig,
            "train": TrainConfig, "output": OutputConfig, "cloud": CloudConfig,
            "distribution": DistributionConfig}


@dataclass(frozen=True)
class RunConfig:
    """What the user asked for a run (see the module docstring)."""

    preset: str | None = option(None, "Model preset (see `kerastrain presets`)",
                                flags=("--preset", "--model-preset"))
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    distribution: DistributionConfig = field(default_factory=DistributionConfig)

    def validate(self) -> None:
        """Each option's own check, then the checks that relate several options. (Plugins'
        options are checked as they are parsed: :func:`kerastrain.plugins.run_options`.)"""
        for declared in declared_fields(RunConfig):
            declared.check(self.value_of(declared))
        self.model.validate()
        d, tok = self.data, self.tokenizer
        if d.stride is not None and not 1 <= d.stride <= self.model.seq_len:
            raise ConfigError(f"--stride must be between 1 and --seq-len ({self.model.seq_len})")
        if tok.min_vocab_size > tok.max_vocab_size:
            raise ConfigError("--min-vocab-size is larger than --max-vocab-size")
        if tok.vocab_size is not None and tok.auto_vocab_size:
            raise ConfigError("--vocab-size and --auto-vocab-size contradict each other; pass one")
        from kerastrain.mixture_config import datasets_of

        datasets_of(d)  # the datasets and weights agree (one-line errors)
        if self.cloud.provider and not self.cloud.bucket:
            raise ConfigError("--cloud-provider needs --cloud-bucket (the bucket or container)")

    def value_of(self, declared: Declared) -> Any:
        """The value of a declared option (a plugin's: its section's ``extra``, or its default)."""
        where = self if declared.section is None else getattr(self, declared.section)
        if declared.name in {f.name for f in dataclasses.fields(where)}:
            return getattr(where, declared.name)
        return where.extra.get(declared.name, declared.default)

    def replace(self, **sections) -> RunConfig:
        return dataclasses.replace(self, **sections)

    def to_dict(self, redact: bool = True) -> dict:
        """The request as ``run_config.json`` holds it: every option's value by section (the
        model section: its options only; the vocabulary is the tokenizer's), secrets redacted."""
        data: dict = {"preset": self.preset}
        options = [d for d in declared_fields(RunConfig) if d.section]
        for name in SECTIONS:
            section = getattr(self, name)
            values = {d.name: getattr(section, d.name) for d in options if d.section == name}
            values.update(getattr(section, "extra", {}))
            data[name] = values
        data = redacted(data) if redact else data
        return json.loads(json.dumps(data))  # plain JSON types (lists, not tuples)

    @classmethod
    def from_dict(cls, data: dict, resolve_preset=None) -> RunConfig:
        """The inverse of :meth:`to_dict` (redacted secrets are left unset). ``resolve_preset``:
        a preset name -> its model fields (:func:`kerastrain.model.presets.resolve_preset`), for
        the model fields that are not options (without it they take their defaults)."""
        declared = {(d.section, d.name): d for d in declared_fields(RunConfig) if d.section}
        values: dict[str, dict] = {}
        for name, cls_ in SECTIONS.items():
            own = {f.name for f in dataclasses.fields(cls_)}
            values[name] = {k: v for k, v in (data.get(name) or {}).items() if v != REDACTED
                            and ((name, k) in declared or (k not in own and name != "model"))}
            for k, v in values[name].items():
                if (name, k) in declared and declared[name, k].base_type is list and not \
                        isinstance(v, list):  # an older run's one value of a list option
                    values[name][k] = [] if v is None else [v]
                if isinstance(v, dict):  # KEY=VALUE settings: redacted credentials left unset
                    values[name][k] = {n: x for n, x in v.items() if x != REDACTED}
        preset = data.get("preset")
        return build_run_config(values, preset,
                                resolve_preset(preset) if preset and resolve_preset else None)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def build_run_config(values: dict[str, dict], preset: str | None,
                     preset_fields: dict | None = None) -> RunConfig:
    """A RunConfig from option values by section (fields not given keep their defaults).

    Values that are not a section's own fields (plugins' options) go to its ``extra``. The model
    section starts from ``preset_fields`` (the preset's model fields, if any); the model's
    vocabulary is the asked one until the run resolves it."""
    sections: dict[str, dict] = {}
    for name, cls in SECTIONS.items():
        own = {f.name for f in dataclasses.fields(cls)}
        given = values.get(name, {})
        sections[name] = {k: v for k, v in given.items() if k in own}
        if name != "model":
            sections[name]["extra"] = {k: v for k, v in given.items() if k not in own}
    tokenizer = TokenizerConfig(**sections.pop("tokenizer"))
    model_fields = {**(preset_fields or {}), **sections.pop("model"),
                    "vocab_size": tokenizer.asked_vocab_size}
    return RunConfig(
        tokenizer=tokenizer, model=section_values(ModelConfig, model_fields), preset=preset,
        **{name: SECTIONS[name](**fields) for name, fields in sections.items()},
    )
