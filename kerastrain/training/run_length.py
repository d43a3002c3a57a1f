"""How many optimizer updates a run makes: ``--max-steps``, or the updates its epochs hold.

The learning-rate schedule must end on the run's last update, and ``--epochs N`` must train every
example N times. Both need the number of batches the training pipeline will yield, and with
packing (padding in rows), ``--no-packing``, ``--stride`` or a shuffle that changes what shares a
row, no formula gives it: an estimate from the first documents planned 15 updates where the data
held 32 (53% of it never trained). So the run *counts*: it iterates the very pipeline it trains
from (same settings, same seed, so the same batches) once before training, and the count is
exact. It costs one tokenizing pass per epoch (the embedded corpus: ~1 s per epoch here); a
stream of unknown length needs ``--max-steps``, as before.

Several processes each read their own share of a stream that repeats; their step count is still
estimated from the whole stream's first documents (:func:`estimate_updates`).
"""

from __future__ import annotations

import itertools
import math

from kerastrain.config import RunConfig
from kerastrain.errors import ConfigError


def known_length(config: RunConfig, train_docs) -> int | None:
    """The number of training documents, when the source or ``--max-train-examples`` tells."""
    try:
        n_docs = len(train_docs)
    except TypeError:  # a stream; a mixture of sized datasets can tell about how long
        n_docs = getattr(train_docs, "expected_length", lambda: None)()
    if config.data.max_train_examples:
        n_docs = min(n_docs or config.data.max_train_examples, config.data.max_train_examples)
    return n_docs


def _unknown_length() -> ConfigError:
    return ConfigError(
        "the training stream's length is unknown; pass --max-steps (or --max-train-examples) "
        "so the learning-rate schedule knows how long the run is")


def count_updates(config: RunConfig, train_docs, pipeline, say=print) -> tuple[int, str]:
    """The updates of the run: ``--max-steps``, or every batch ``pipeline`` yields over its epochs
    counted (the last update may hold fewer micro-batches, padded: see ``Trainer``). The pipeline
    is left at its start."""
    t = config.train
    if t.max_steps:
        return t.max_steps, f"{t.max_steps} steps (--max-steps)"
    if known_length(config, train_docs) is None:
        raise _unknown_length()
    from kerastrain.data.pipeline import PipelineState

    say(f"Counting the batches of {t.epochs} epoch(s) (--max-steps skips this) ...")
    batches = 0
    for _ in pipeline:
        batches += 1
    pipeline.restore(PipelineState())
    updates = math.ceil(batches / t.gradient_accumulation_steps)
    if updates == 0:
        from kerastrain.errors import DataError

        raise DataError("the training data holds no complete sequence; pass more data or a "
                        "smaller --seq-len")
    return updates, (f"{updates} steps ({t.epochs} epochs, counted: {batches} batches of "
                     f"{pipeline.batch_size} rows)")


def estimate_updates(config: RunConfig, train_docs, tokenizer, devices: int = 1, plan=None
                     ) -> tuple[int, str]:
    """Several processes: epochs × the data's size estimated from its first 500 documents
    (``--batch-size`` rows on each of ``devices``)."""
    t = config.train
    if t.max_steps:
        return t.max_steps, f"{t.max_steps} steps (--max-steps)"
    n_docs = known_length(config, train_docs)
    if n_docs is None:
        raise _unknown_length()
    sample = list(itertools.islice(train_docs.iter_from(0), min(n_docs, 500)))
    if plan is None or plan.format.name == "text":
        lengths = [len(ids) + 1 for ids in tokenizer.encode_batch(
            sample if plan is None else [plan.format.text(r, plan.context) for r in sample])]
    else:  # packed examples: each takes at most its length of a row
        lengths = [min(len(e.ids), config.model.seq_len + 1) if e.whole else len(e.ids)
                   for e in plan.format.encode(sample, plan.with_tokenizer(tokenizer))]
    tokens_per_doc = sum(lengths) / max(1, len(sample))
    stride = config.data.stride or config.model.seq_len
    per_update = t.batch_size * devices * stride * t.gradient_accumulation_steps
    per_epoch = max(1, int(n_docs * tokens_per_doc / per_update))
    return per_epoch * t.epochs, (
        f"{per_epoch * t.epochs} steps ({t.epochs} epochs of ~{per_epoch} steps, "
        f"~{n_docs * tokens_per_doc:,.0f} tokens per epoch, estimated)"
    )
