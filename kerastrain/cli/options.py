"""The options of ``kerastrain run`` (the seed guide's parameter reference, same names and
defaults) and how they become one :class:`kerastrain.config.RunConfig`.

Shared by every command that takes a run's options (``run``, ``plan``).
"""

from __future__ import annotations

import functools

import click

from kerastrain.cli.config_file import config_file_option
from kerastrain.config import (
    CloudConfig,
    DataConfig,
    DistributionConfig,
    ModelConfig,
    OutputConfig,
    RunConfig,
    TokenizerConfig,
    TrainConfig,
)
from kerastrain.errors import ConfigError

O = click.option  # noqa: E741 - keeps the table below readable

# (section, option declarations, click kwargs). Model options default to None so a preset's
# values apply unless the user names the option.
OPTIONS = [
    # Dataset
    ("Dataset", ["--dataset-id"], dict(default=None, help="Dataset: hub id, local path/glob, hf:ID, tfds:NAME, or a plugin's NAME:... (default: the embedded corpus)")),
    ("Dataset", ["--text-column"], dict(default="text", show_default=True, help="Column holding the text")),
    ("Dataset", ["--dataset-config"], dict(default=None, help="Dataset configuration/subset")),
    ("Dataset", ["--split"], dict(default="train", show_default=True, help="Training split")),
    ("Dataset", ["--val-split"], dict(default=None, help="Validation split")),
    ("Dataset", ["--data-dir"], dict(default=None, help="Data directory (TFDS)")),
    ("Dataset", ["--max-train-examples"], dict(type=int, default=None, help="Limit training documents")),
    ("Dataset", ["--max-val-examples"], dict(type=int, default=None, help="Limit validation documents")),
    # Tokenizer
    ("Tokenizer", ["--tokenizer", "tokenizer_kind"], dict(default="bpe", show_default=True, help="Tokenizer kind (bpe, bytes, or a plugin's)")),
    ("Tokenizer", ["--auto-vocab-size"], dict(is_flag=True, help="Choose the vocabulary size from the data")),
    ("Tokenizer", ["--vocab-size"], dict(type=int, default=None, help="Vocabulary size [default: 16000]")),
    ("Tokenizer", ["--min-vocab-size"], dict(type=int, default=5000, show_default=True, help="Smallest size for --auto-vocab-size")),
    ("Tokenizer", ["--max-vocab-size"], dict(type=int, default=50000, show_default=True, help="Largest size for --auto-vocab-size")),
    ("Tokenizer", ["--tokenizer-train-examples"], dict(type=int, default=10000, show_default=True, help="Documents to train the tokenizer on")),
    ("Tokenizer", ["--retrain-tokenizer"], dict(is_flag=True, help="Train a new tokenizer even if one exists")),
    ("Tokenizer", ["--tokenizer-path"], dict(default=None, help="Where to load/save the tokenizer [default: OUTPUT_DIR/tokenizer.json]")),
    # Model
    ("Model", ["--preset", "--model-preset", "preset"], dict(default=None, help="Model preset (see `kerastrain presets`)")),
    ("Model", ["--d-model"], dict(type=int, default=None, help="Hidden size [default: 512]")),
    ("Model", ["--num-layers"], dict(type=int, default=None, help="Transformer layers [default: 6]")),
    ("Model", ["--num-heads"], dict(type=int, default=None, help="Attention heads [default: 8]")),
    ("Model", ["--d-ff"], dict(type=int, default=None, help="Feed-forward size [default: 2048]")),
    ("Model", ["--seq-len"], dict(type=int, default=None, help="Sequence length [default: 256]")),
    ("Model", ["--dropout-rate"], dict(type=float, default=None, help="Dropout rate [default: 0.1]")),
    ("Model", ["--activation"], dict(type=click.Choice(["relu", "gelu", "gelu_tanh", "silu"]), default=None, help="Plain-MLP activation (with --no-swiglu) [default: gelu]")),
    ("Model", ["--no-rmsnorm"], dict(is_flag=True, default=None, help="LayerNorm instead of RMSNorm")),
    ("Model", ["--no-swiglu"], dict(is_flag=True, default=None, help="Plain MLP instead of SwiGLU")),
    ("Model", ["--no-rope"], dict(is_flag=True, default=None, help="Learned positions instead of RoPE")),
    ("Model", ["--use-lora"], dict(is_flag=True, help="Train LoRA adapters only")),
    ("Model", ["--lora-rank"], dict(type=int, default=8, show_default=True, help="LoRA rank")),
    ("Model", ["--init-from"], dict(default=None, help="Start from this checkpoint, or a downloaded Hugging Face / keras-hub model folder (Llama, GPT-2): its weights, shape and tokenizer")),
    # Training
    ("Training", ["--epochs"], dict(type=int, default=3, show_default=True, help="Epochs")),
    ("Training", ["--max-steps"], dict(type=int, default=None, help="Stop after this many updates (overrides --epochs)")),
    ("Training", ["--batch-size"], dict(type=int, default=32, show_default=True, help="Batch size")),
    ("Training", ["--gradient-accumulation-steps"], dict(type=int, default=1, show_default=True, help="Micro-batches per update")),
    ("Training", ["--learning-rate"], dict(type=float, default=5e-4, show_default=True, help="Peak learning rate")),
    ("Training", ["--weight-decay"], dict(type=float, default=0.01, show_default=True, help="AdamW weight decay")),
    ("Training", ["--warmup-steps"], dict(type=int, default=500, show_default=True, help="Warm-up steps (at most half the run)")),
    ("Training", ["--grad-clip"], dict(type=float, default=1.0, show_default=True, help="Global gradient-norm clip (0: off)")),
    ("Training", ["--adam-beta1"], dict(type=float, default=0.9, show_default=True, help="AdamW beta_1")),
    ("Training", ["--adam-beta2"], dict(type=float, default=0.95, show_default=True, help="AdamW beta_2 (LLM practice; Keras' default is 0.999)")),
    ("Training", ["--adam-epsilon"], dict(type=float, default=1e-8, show_default=True, help="AdamW epsilon (Keras' default is 1e-7)")),
    ("Training", ["--seed"], dict(type=int, default=42, show_default=True, help="Random seed")),
    # Data loading
    ("Data loading", ["--streaming/--no-streaming"], dict(default=True, show_default=True, help="Stream the dataset, or load it into memory")),
    ("Data loading", ["--shuffle-buffer-size"], dict(type=int, default=10000, show_default=True, help="Shuffle buffer (documents); 1 disables shuffling")),
    ("Data loading", ["--window-shuffle-size"], dict(type=int, default=1024, show_default=True, help="Shuffle buffer (packed windows) so a batch mixes many documents; 0 disables")),
    ("Data loading", ["--data-workers"], dict(type=int, default=1, show_default=True, help="Tokenizer threads (batches and resume are the same for any number)")),
    ("Data loading", ["--stride"], dict(type=int, default=None, help="Window stride [default: seq_len]")),
    # Optimization
    ("Optimization", ["--remat"], dict(is_flag=True, help="Recompute each block's activations in the backward pass: less memory, ~1/3 more compute")),
    ("Optimization", ["--use-mixed-precision"], dict(is_flag=True, help="bfloat16 compute, float32 weights and loss")),
    # Checkpoint & logging
    ("Checkpoint & logging", ["--output-dir"], dict(default="output_advanced", show_default=True, help="Output directory")),
    ("Checkpoint & logging", ["--log-every"], dict(type=int, default=10, show_default=True, help="Log every N steps")),
    ("Checkpoint & logging", ["--save-every"], dict(type=int, default=1000, show_default=True, help="Checkpoint every N steps")),
    ("Checkpoint & logging", ["--eval-every"], dict(type=int, default=500, show_default=True, help="Validate every N steps")),
    ("Checkpoint & logging", ["--keep-last"], dict(type=int, default=None, help="Keep only the newest N step checkpoints")),
    ("Checkpoint & logging", ["--resume-from"], dict(default=None, help="Checkpoint directory or URL: s3://, gs://, az://, file://, or any scheme a storage plugin registers (see `kerastrain plugins`)")),
    ("Checkpoint & logging", ["--overwrite"], dict(is_flag=True, help="Start fresh instead of resuming in OUTPUT_DIR")),
    ("Checkpoint & logging", ["--tracker", "trackers"], dict(multiple=True, help="Also send the run to an experiment tracker plugin (mlflow, wandb); repeatable")),
    ("Checkpoint & logging", ["--sample-every"], dict(type=int, default=None, help="Print and log a generated sample every N steps (0: never) [default: at each evaluation on a terminal]")),
    ("Checkpoint & logging", ["--sample-prompt"], dict(default="The", show_default=True, help="The fixed prompt of those samples")),
    # Cloud storage
    ("Cloud storage", ["--cloud-provider"], dict(default=None, help="Upload checkpoints: s3, gcs, azure, or a plugin's")),
    ("Cloud storage", ["--cloud-bucket"], dict(default=None, help="Bucket or container")),
    ("Cloud storage", ["--cloud-region"], dict(default=None, help="Region")),
    ("Cloud storage", ["--cloud-prefix"], dict(default="checkpoints", show_default=True, help="Key prefix")),
    ("Cloud storage", ["--azure-sas-token"], dict(default=None, envvar="AZURE_STORAGE_SAS_TOKEN", help="Azure SAS token (or $AZURE_STORAGE_SAS_TOKEN)")),
    ("Cloud storage", ["--azure-account-name"], dict(default=None, help="Azure storage account")),
    ("Cloud storage", ["--cloud-option", "cloud_options"], dict(multiple=True, metavar="KEY=VALUE", help="A setting handed to the storage backend's from_config (repeatable; see the backend's docs)")),
    ("Cloud storage", ["--upload-timeout"], dict(type=float, default=600.0, show_default=True, envvar="KERASTRAIN_UPLOAD_TIMEOUT", help="Seconds the end of a run waits for uploads; then it lists what did not upload and exits 3")),
    # Distribution (kerastrain.training.distribution)
    ("Distribution", ["--data-parallel"], dict(type=int, default=None, help="Data-parallel devices [default: the devices --fsdp and --tensor-parallel leave]")),
    ("Distribution", ["--fsdp"], dict(type=int, default=None, help="Devices that shard weights, gradients and optimizer state (ZeRO-3) [default: 1]")),
    ("Distribution", ["--tensor-parallel"], dict(type=int, default=None, help="Devices that split attention heads and MLP columns [default: 1]")),
    ("Distribution", ["--coordinator-address"], dict(default=None, help="HOST:PORT of process 0 for a multi-process run")),
    ("Distribution", ["--num-processes"], dict(type=int, default=None, help="Processes of a multi-process run")),
    ("Distribution", ["--process-id"], dict(type=int, default=None, help="This process's id, 0 .. num-processes - 1")),
]


def run_options(f):
    """Add every ``kerastrain run`` option to a click command."""
    for section, decls, kwargs in reversed(OPTIONS):
        kwargs = dict(kwargs)
        help_text = kwargs.pop("help", "")
        f = click.option(*decls, help=f"[{section}] {help_text}", **kwargs)(f)
    return config_file_option(OPTIONS)(f)


def _preset_fields(name: str) -> dict:
    from kerastrain.model.presets import resolve_preset

    return resolve_preset(name)


def parse_cloud_options(pairs) -> dict[str, str]:
    """``--cloud-option KEY=VALUE`` pairs as a dict (a key given twice: the last wins)."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--cloud-option {pair!r} is not KEY=VALUE")
        found[key.strip()] = value
    return found


def build_config(params: dict) -> tuple[RunConfig, bool]:
    """A validated RunConfig from click's parameters; also whether --vocab-size was given."""
    p = dict(params)
    model_fields: dict = {}
    if p.get("preset"):
        model_fields.update(_preset_fields(p["preset"]))
    direct = ("d_model", "num_layers", "num_heads", "d_ff", "seq_len", "dropout_rate", "activation")
    for name in direct:
        if p.get(name) is not None:
            model_fields[name] = p[name]
    for flag, field_name in (("no_rmsnorm", "use_rmsnorm"), ("no_swiglu", "use_swiglu"),
                             ("no_rope", "use_rope")):
        if p.get(flag):
            model_fields[field_name] = False
    explicit_vocab = p.get("vocab_size") is not None
    vocab = p["vocab_size"] if explicit_vocab else 16000
    model_fields.update(vocab_size=vocab, use_lora=p["use_lora"], lora_rank=p["lora_rank"],
                        mixed_precision=p["use_mixed_precision"], remat=p["remat"])
    known = set(ModelConfig.__dataclass_fields__)
    model = ModelConfig(**{k: v for k, v in model_fields.items() if k in known})
    config = RunConfig(
        data=DataConfig(
            dataset_id=p["dataset_id"], dataset_config=p["dataset_config"],
            text_column=p["text_column"], split=p["split"], val_split=p["val_split"],
            data_dir=p["data_dir"], max_train_examples=p["max_train_examples"],
            max_val_examples=p["max_val_examples"], streaming=p["streaming"],
            shuffle_buffer_size=p["shuffle_buffer_size"], stride=p["stride"],
            window_shuffle_size=p["window_shuffle_size"], data_workers=p["data_workers"],
        ),
        tokenizer=TokenizerConfig(
            kind=p["tokenizer_kind"], vocab_size=vocab, auto_vocab_size=p["auto_vocab_size"],
            min_vocab_size=p["min_vocab_size"], max_vocab_size=p["max_vocab_size"],
            train_examples=p["tokenizer_train_examples"], retrain=p["retrain_tokenizer"],
            path=p["tokenizer_path"],
        ),
        model=model,
        train=TrainConfig(
            epochs=p["epochs"], max_steps=p["max_steps"], batch_size=p["batch_size"],
            gradient_accumulation_steps=p["gradient_accumulation_steps"],
            learning_rate=p["learning_rate"], weight_decay=p["weight_decay"],
            warmup_steps=p["warmup_steps"], grad_clip=p["grad_clip"], seed=p["seed"],
            adam_beta1=p["adam_beta1"], adam_beta2=p["adam_beta2"], adam_epsilon=p["adam_epsilon"],
            init_from=p["init_from"],
        ),
        output=OutputConfig(
            output_dir=p["output_dir"], log_every=p["log_every"], save_every=p["save_every"],
            eval_every=p["eval_every"], keep_last=p["keep_last"], resume_from=p["resume_from"],
            overwrite=p["overwrite"], trackers=list(p.get("trackers") or ()),
            sample_every=p.get("sample_every"), sample_prompt=p.get("sample_prompt") or "The",
        ),
        cloud=CloudConfig(
            provider=p["cloud_provider"], bucket=p["cloud_bucket"], region=p["cloud_region"],
            prefix=p["cloud_prefix"], azure_sas_token=p["azure_sas_token"],
            azure_account_name=p["azure_account_name"],
            backend_options=parse_cloud_options(p.get("cloud_options") or ()),
            upload_timeout=p.get("upload_timeout", 600.0),
        ),
        preset=p.get("preset"),
        distribution=DistributionConfig(
            data_parallel=p["data_parallel"], fsdp=p["fsdp"],
            tensor_parallel=p["tensor_parallel"], coordinator_address=p["coordinator_address"],
            num_processes=p["num_processes"], process_id=p["process_id"],
        ),
    )
    if explicit_vocab and p["auto_vocab_size"]:
        raise ConfigError("--vocab-size and --auto-vocab-size contradict each other; pass one")
    config.validate()
    return config, explicit_vocab


def with_run_options(f):
    """Decorator: the command receives ``config`` (RunConfig) and ``explicit_vocab`` in place of
    the run options; its own options pass through."""
    names = {p.name for p in run_options(click.command()(lambda **kw: None)).params}

    @run_options
    @functools.wraps(f)
    def wrapper(**params):
        own = {k: params.pop(k) for k in list(params) if k not in names}
        config, explicit_vocab = build_config(params)
        return f(config=config, explicit_vocab=explicit_vocab, **own)

    return wrapper
