"""Packing preference pairs: both sides of a pair in one row, each its own segment.

A row holds whole pairs in stream order, the ``k``-th as segments ``2k + 1`` (chosen) and
``2k + 2`` (rejected): the loss finds a pair's sides from the segment ids alone
(:mod:`kerastrain.training.preference_loss`), attention never crosses a segment and positions
restart at each. A pair that does not fit in what is left of the row starts the next row, so a
pair is never split across rows (nor, rows being whole, across devices). ``--no-packing``: one
pair per row, the rest padding (what TRL's padded batches hold).

A pair longer than a row (``--overlong``): ``drop`` drops it; ``truncate`` gives each side half
the row, keeping the end of the prompt the sides share (TRL's ``truncation_mode="keep_end"``) and
the start of both replies: the prompt keeps what the longer reply leaves of the half, at least
half of it, and each reply then fills the rest. Both are counted with the row, like the
:class:`~kerastrain.data.packing.RowPacker`'s, whose state (and so exact resume) this shares.
"""

from __future__ import annotations

import numpy as np

from kerastrain.data.packing import META_DROPPED, META_EXAMPLES, META_TRUNCATED, RowPacker


def truncated_sides(pair, seq_len: int):
    """Both sides of ``pair`` cut to fit one row of ``seq_len`` positions together (see the
    module docstring): ``[(ids, mask), (ids, mask)]``."""
    budget = (seq_len + 2) // 2  # tokens per side: (budget - 1) positions each
    prompt = min(pair.prompt_len, len(pair.chosen.ids) - 1, len(pair.rejected.ids) - 1)
    longest = max(len(pair.chosen.ids), len(pair.rejected.ids)) - prompt
    keep = min(prompt, max(budget - longest, budget // 2))
    sides = []
    for side in (pair.chosen, pair.rejected):
        reply = slice(prompt, prompt + budget - keep)
        sides.append((side.ids[prompt - keep:prompt] + side.ids[reply],
                      side.mask[prompt - keep:prompt] + side.mask[reply]))
    return sides


class PairPacker(RowPacker):
    """Packs :class:`~kerastrain.data.preference_format.PairExample` s into the rows a
    :class:`RowPacker` makes (same lines, counts and state)."""

    def add(self, pair, tag: int = 0) -> list[np.ndarray]:
        sides = [(pair.chosen.ids, pair.chosen.mask), (pair.rejected.ids, pair.rejected.mask)]
        positions = sum(len(ids) - 1 for ids, _ in sides)
        truncated = positions > self.seq_len
        if truncated and self.overlong == "truncate":
            sides = truncated_sides(pair, self.seq_len)
        if (truncated and self.overlong == "drop") or any(not any(m[1:]) for _, m in sides):
            self.counts[META_DROPPED] += 1  # too long, or nothing trained left once cut
            return []
        done = []
        n = sum(len(ids) - 1 for ids, _ in sides)
        if len(self.inputs) + n > self.seq_len or (self.inputs and not self.several):
            done.append(self.flush())
        segment = (self.segments[-1] if self.segments else 0) + 1
        for k, (ids, mask) in enumerate(sides):
            self.inputs += ids[:-1]
            self.labels += [t if m else -1 for t, m in zip(ids[1:], mask[1:], strict=True)]
            self.segments += [segment + k] * (len(ids) - 1)
            self.tags += [tag] * (len(ids) - 1)
        self.placed += 1
        self.counts[META_TRUNCATED] += truncated
        self.counts[META_EXAMPLES] += 1
        return [row for row in done if row is not None]
