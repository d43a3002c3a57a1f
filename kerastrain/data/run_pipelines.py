"""The run's pipelines, built one way for training, for counting the run's updates, for its
validation and for ``kerastrain eval``: the same data format, packing, masks and truncation
wherever a run's data is read (eval once built its own, and scored 1,614 tokens of a
``--train-on-prompt`` run's files where validation had scored 5,021)."""

from __future__ import annotations

from kerastrain.config import RunConfig
from kerastrain.data.pipeline import StreamingTextPipeline


def format_options(config: RunConfig, plan, tokenizer) -> dict:
    """How records become rows: through the data format (packed with document masks) unless
    the run reads plain text into windows."""
    d = config.data
    if plan is None or not (plan.packed or plan.format.name != "text"):
        return {}
    return dict(data_format=plan.format, format_context=plan.with_tokenizer(tokenizer),
                packed=plan.packed, overlong=d.overlong, packing=d.packing)


def training_pipeline(config: RunConfig, seq_len: int, docs, tokenizer, plan=None,
                      source_names=None, rows: int | None = None,
                      process: tuple[int, int] = (0, 1)) -> StreamingTextPipeline:
    """The training batches: ``rows`` per batch in this process (default ``--batch-size``);
    ``process``: (this process, processes)."""
    d, t = config.data, config.train
    max_docs, epochs = d.max_train_examples, None if t.max_steps else t.epochs
    # Each process reads its own share (every n-th document of the first --max-train-examples).
    # Shares may hold different numbers of batches: the run's length is the largest share's
    # (run_length), and a process whose share has ended trains empty batches until then
    # (Trainer), so every example is trained.
    return StreamingTextPipeline(
        docs, tokenizer, seq_len=seq_len, batch_size=rows or t.batch_size, stride=d.stride,
        shuffle_buffer_size=d.shuffle_buffer_size, seed=t.seed,
        max_documents=max_docs, epochs=epochs, drop_remainder=False,
        window_shuffle_size=d.window_shuffle_size, workers=d.data_workers,
        source_names=source_names, process=process, **format_options(config, plan, tokenizer),
    )


def validation_pipeline(config: RunConfig, seq_len: int, docs, tokenizer, plan=None
                        ) -> StreamingTextPipeline:
    """One pass over held-out ``docs``: in order, every row once, the last batch kept."""
    d, t = config.data, config.train
    return StreamingTextPipeline(
        docs, tokenizer, seq_len=seq_len, batch_size=t.batch_size, shuffle_buffer_size=1,
        max_documents=d.max_val_examples, epochs=1, drop_remainder=False,
        **format_options(config, plan, tokenizer),
    )
