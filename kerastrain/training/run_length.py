"""How many optimizer updates a run makes: ``--max-steps``, or the updates its epochs hold.

The learning-rate schedule must end on the run's last update, and ``--epochs N`` must train every
example N times. Both need the number of batches the training pipeline will yield, and with
packing (padding in rows), ``--no-packing``, ``--stride`` or a shuffle that changes what shares a
row, no formula gives it: an estimate from the first documents planned 15 updates where the data
held 32 (53% of it never trained). So the run *counts*: it iterates the very pipeline it trains
from (same settings, same seed, so the same batches) once before training, and the count is
exact. It costs one tokenizing pass per epoch (the embedded corpus: ~1 s per epoch here); a
stream of unknown length needs ``--max-steps``, as before.

Several processes each count the batches of their own share, and the run is as long as the
largest share: a process whose share has ended trains empty batches (labels -1) until the others
end, so every example of every share is trained N times.
"""

from __future__ import annotations

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
    shares = _every_process(batches)
    batches = max(shares)
    updates = math.ceil(batches / t.gradient_accumulation_steps)
    if updates == 0:
        from kerastrain.errors import DataError

        raise DataError("the training data holds no complete sequence; pass more data or a "
                        "smaller --seq-len")
    of = f" in the largest of {len(shares)} processes' shares" if len(shares) > 1 else ""
    return updates, (f"{updates} steps ({t.epochs} epochs, counted: {batches} batches of "
                     f"{pipeline.batch_size} rows{of})")


def _every_process(batches: int) -> list[int]:
    """Each process's count, in process order (a collective in a multi-process run)."""
    import jax

    if jax.process_count() == 1:
        return [batches]
    import numpy as np
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.array([batches], np.int64))
    return [int(n) for n in np.asarray(gathered).reshape(-1)]
