"""``kerastrain eval``: score a checkpoint on a dataset without training.

The data streams through the same :class:`~kerastrain.data.pipeline.StreamingTextPipeline` as
training (no shuffling, every window once, the last batch kept), so a dataset of any size is
scored in constant memory. Without a dataset, the validation data of the run that made the
checkpoint is scored (its ``run_config.json``), which reproduces that run's ``val_loss``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from kerastrain.config import RunConfig
from kerastrain.errors import ConfigError


@dataclass
class EvalRequest:
    """What to score: a checkpoint and, optionally, a dataset other than its run's validation."""

    checkpoint: str
    dataset_id: str | None = None
    dataset_config: str | None = None
    text_column: str | None = None
    split: str | None = None
    data_dir: str | None = None
    max_examples: int | None = None
    batch_size: int | None = None


def run_config_of(checkpoint: Path) -> RunConfig | None:
    """The configuration of the run that wrote ``checkpoint`` (its own copy first)."""
    from kerastrain.model.loading import _find

    output_dir, ckpt = _find(checkpoint)
    for candidate in (ckpt / "run_config.json", output_dir / "run_config.json"):
        if candidate.is_file():
            from kerastrain.model.presets import resolve_preset

            return RunConfig.from_dict(json.loads(candidate.read_text()), resolve_preset)
    return None


def _data_config(request: EvalRequest, run: RunConfig | None) -> tuple[object, str]:
    """(DataConfig for the split to score, the split's name)."""
    from kerastrain.config import DataConfig

    ids = [request.dataset_id] if isinstance(request.dataset_id, str) else list(
        request.dataset_id or ())
    if len(ids) > 1:
        raise ConfigError("eval scores one dataset at a time: pass one --dataset-id")
    if not ids:
        if run is None:
            raise ConfigError(f"{request.checkpoint} has no run_config.json to find its run's "
                              "validation data; pass --dataset-id (and --split)")
        data = run.data
        if len(data.dataset_id) > 1 or data.datasets:
            raise ConfigError("the run trained on a mixture of datasets; pass --dataset-id (and "
                              "--split) to score one of them")
        split = request.split or data.val_split
        if split is None and not data.dataset_id:
            split = "validation"  # the embedded corpus always has its held-out split
        if split is None:
            raise ConfigError("the run that made this checkpoint had no validation split; pass "
                              "--split (e.g. --split train) or --dataset-id")
        return dataclasses.replace(
            data, max_val_examples=request.max_examples or data.max_val_examples), split
    data = DataConfig(dataset_id=ids, dataset_config=request.dataset_config,
                      text_column=request.text_column or "text", data_dir=request.data_dir,
                      max_val_examples=request.max_examples)
    return data, request.split or "validation"


def evaluate_checkpoint(request: EvalRequest, progress=None) -> dict:
    """Loss (mean next-token cross-entropy), perplexity and token count on the requested data.

    ``progress(tokens)`` is called after every batch when given."""
    import jax

    from kerastrain.data.chat_template import TEMPLATE_FILE
    from kerastrain.data.pipeline import StreamingTextPipeline
    from kerastrain.data.preparation import plan_data, resolve_source
    from kerastrain.data.sources import SourceRequest
    from kerastrain.model.loading import _find, load, read_model_config
    from kerastrain.training.loss import chunked_eval_loss

    checkpoint = Path(request.checkpoint)
    run = run_config_of(checkpoint)
    data, split = _data_config(request, run)
    output_dir, _ = _find(checkpoint)
    if data.chat_template is None and (output_dir / TEMPLATE_FILE).is_file():
        data = dataclasses.replace(data, chat_template=str(output_dir / TEMPLATE_FILE))
    model, tokenizer = load(checkpoint)
    source, location = resolve_source(data.dataset_id[0] if data.dataset_id else None)

    def open_split(records: bool):
        return source.open(SourceRequest(
            location=location, split=split, dataset_config=data.dataset_config,
            text_column=data.text_column, streaming=True, data_dir=data.data_dir,
            records=records))

    documents = open_split(data.data_format != "text")
    # The run's data format: chat data is scored on the tokens it trains (assistant turns).
    plan = plan_data(RunConfig(data=data), documents, say=lambda _: None)
    formatted = {}
    if plan.packed or plan.format.name != "text":
        formatted = dict(data_format=plan.format, format_context=plan.with_tokenizer(tokenizer),
                         packed=plan.packed, overlong=data.overlong)
    elif data.data_format != "text":
        documents = open_split(False)
    batch_size = request.batch_size or (run.train.batch_size if run else 8)
    seq_len = read_model_config(*_find(checkpoint)).seq_len
    pipeline = StreamingTextPipeline(
        documents, tokenizer, seq_len=seq_len, batch_size=batch_size, shuffle_buffer_size=1,
        max_documents=data.max_val_examples, epochs=1, drop_remainder=False, **formatted,
    )

    # The in-run validation's very loss: output projection and cross-entropy in chunks, so eval
    # never holds the whole batch's logits (training's memory, not more).
    def score(trainable, non_trainable, x, y, segments):
        return chunked_eval_loss(model, trainable, non_trainable, x, y, segment_ids=segments)

    score = jax.jit(score)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    total, tokens, batches = 0.0, 0, 0
    for batch in pipeline:
        s, n = score(trainable, non_trainable, batch.inputs, batch.labels, batch.segments)
        total += float(s)
        tokens += int(n)
        batches += 1
        if progress is not None:
            progress(tokens)
    if tokens == 0:
        raise ConfigError(f"split {split!r} gave no complete window of {seq_len + 1} tokens to "
                          "score; pass more data (--max-examples) or another --split")
    loss = total / tokens
    return {
        "checkpoint": str(checkpoint),
        "dataset": data.dataset_id[0] if data.dataset_id else "builtin",
        "split": split,
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "tokens": tokens,
        "batches": batches,
        "seq_len": seq_len,
    }
