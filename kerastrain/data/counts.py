"""What a batch trains, counted from the batch itself.

Counts taken when documents are read describe data read ahead (a chunk of 256 documents, a full
shuffle buffer), not data trained: after one batch of 8 examples the truncated count was 205. So
every count here is taken from a batch's own arrays when the pipeline emits it, and added to the
pipeline's running totals that the batch's saved position carries: the totals after the last
trained batch are exactly what the run trained, and a resumed run continues them.

- ``examples``: packed rows count the examples whose last piece the row holds (each element
  carries its counts into its row: :mod:`kerastrain.data.examples`); plain-text windows count the documents whose
  closing EOS is a label of the window (once, in the window's first ``stride`` labels);
- ``tokens``: positions holding data (not padding); ``trained_tokens``: labels trained (>= 0);
- ``truncated`` / ``dropped``: examples longer than ``--seq-len`` (``--overlong``), of the rows
  trained;
- a mixture's ``tokens`` and ``examples`` of each dataset, after truncation.
"""

from __future__ import annotations

import numpy as np

COUNTED = ("examples", "tokens", "trained_tokens", "truncated", "dropped")


def empty_counts(names: list[str] | None) -> dict:
    counts = dict.fromkeys(COUNTED, 0)
    if names:
        counts["datasets"] = {name: {"examples": 0, "tokens": 0} for name in names}
    return counts


def add_row_counts(totals: dict, labels, segments, tags, counts, names) -> None:
    """Packed rows: ``counts`` holds each row's ``[examples, truncated, dropped]``
    (:data:`kerastrain.data.examples.COUNTS`), ``tags`` each position's dataset."""
    data = segments > 0
    totals["examples"] += int(counts[:, 0].sum())
    totals["truncated"] += int(counts[:, 1].sum())
    totals["dropped"] += int(counts[:, 2].sum())
    totals["tokens"] += int(data.sum())
    totals["trained_tokens"] += int((labels >= 0).sum())
    if names:
        # An example of a dataset: a segment that starts in this row (a piece of a long text
        # document counts once per row it is in).
        starts = data & np.concatenate([np.ones_like(data[:, :1]),
                                        segments[:, 1:] != segments[:, :-1]], axis=1)
        for k, name in enumerate(names):
            mine = tags == k
            counts = totals["datasets"][name]
            counts["tokens"] += int((data & mine).sum())
            counts["examples"] += int((starts & mine).sum())


def add_window_counts(totals: dict, labels, tags, eos_id: int, stride: int, names) -> None:
    """Plain-text windows (``labels``: each window's next tokens; ``tags``: their datasets)."""
    data = labels >= 0  # padding rows are -1
    ends = labels[:, :stride] == eos_id
    totals["examples"] += int(ends.sum())
    totals["tokens"] += int(data.sum())
    totals["trained_tokens"] += int(data.sum())
    if names:
        for k, name in enumerate(names):
            mine = tags == k
            counts = totals["datasets"][name]
            counts["tokens"] += int((data & mine).sum())
            counts["examples"] += int((ends & mine[:, :stride]).sum())


def summed(parts: list[dict]) -> dict:
    """Several processes' totals as one: each counts the batches it trained."""
    if not parts:
        return {}
    total = {k: sum(p.get(k, 0) for p in parts) for k in COUNTED}
    if "datasets" in parts[0]:
        total["datasets"] = {name: {k: sum(p["datasets"][name][k] for p in parts) for k in c}
                             for name, c in parts[0]["datasets"].items()}
    return total


def summary_counts(totals: dict, segmented: bool) -> dict:
    """The summary's counts; ``segmented``: packed rows, which count overlong examples."""
    counts = {"examples_trained": totals.get("examples", 0),
              "tokens_trained": totals.get("tokens", 0),
              "trained_tokens_total": totals.get("trained_tokens", 0)}
    if segmented:  # examples longer than --seq-len (--overlong), of the rows trained
        counts.update(overlong_truncated=totals.get("truncated", 0),
                      overlong_dropped=totals.get("dropped", 0))
    return {**counts, **dataset_shares(totals)}


def dataset_logs(totals: dict) -> dict:
    """A mixture's trained tokens from each dataset, for the metrics."""
    return {f"tokens_from_{name}": c["tokens"] for name, c in totals.get("datasets", {}).items()}


def dataset_shares(totals: dict) -> dict:
    """The realised share of each dataset of a mixture, of examples (what the weights set) and
    of tokens trained, for the summary."""
    parts = totals.get("datasets")
    if not parts:
        return {}
    examples, tokens = (sum(c[k] for c in parts.values()) or 1 for k in ("examples", "tokens"))
    return {"mixture_shares": {name: {"documents": round(c["examples"] / examples, 4),
                                      "tokens": round(c["tokens"] / tokens, 4)}
                               for name, c in parts.items()}}
