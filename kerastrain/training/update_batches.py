"""The micro-batches of each optimizer update, placed on the mesh as the jitted step takes them."""

from __future__ import annotations

import dataclasses

import numpy as np

from kerastrain.data.pipeline import Batch


class UpdateBatches:
    """Groups the pipeline's batches into updates of ``accumulation`` micro-batches.

    ``pipeline``: the training pipeline (its shape and position make the empty batches);
    ``mesh_plan``: where the batches go; ``segmented``: packed rows carry segment ids;
    ``share_may_end``: in several processes of an ``--epochs`` run, this process's share of the
    data may end before the run's counted length (``run_length``)."""

    def __init__(self, pipeline, accumulation: int, mesh_plan, segmented: bool,
                 share_may_end: bool) -> None:
        self.pipeline, self.accumulation, self.mesh_plan = pipeline, accumulation, mesh_plan
        self.segmented, self.share_may_end = segmented, share_may_end

    def next(self, batches, step: int, total_steps: int | None) -> list | None:
        """The micro-batches of the update after ``step``, or None when the data has ended. The
        data's last update may hold fewer: it is completed with micro-batches that train
        nothing, so every example is trained and the update is the schedule's last
        (``run_length``)."""
        micro = []
        for _ in range(self.accumulation):
            batch = next(batches, None)
            if batch is None:
                break
            micro.append(batch)
        # This process's share ended before the others': it trains empty batches (they train
        # nothing) until theirs end.
        share_ended = self.share_may_end and step < total_steps
        if not micro and not share_ended:
            return None
        empty = self.empty_batch(micro[-1] if micro else None)
        return micro + [empty] * (self.accumulation - len(micro))

    def empty_batch(self, last) -> Batch:
        """A micro-batch that trains nothing, shaped as the data's, at the data's position."""
        if last is not None:
            return dataclasses.replace(last, labels=np.full_like(last.labels, -1))
        p = self.pipeline
        zeros = np.zeros((p.batch_size, p.seq_len), np.int32)
        return Batch(zeros, zeros - 1, p.state, segments=zeros if self.segmented else None)

    def place(self, batch, counts) -> tuple:
        """(inputs, labels, counts[, segments]) as the step takes them: global arrays over the
        mesh."""
        arrays = [batch.inputs, batch.labels] + ([batch.segments] if self.segmented else [])
        placed = [self.mesh_plan.place_batch(a) for a in arrays]
        return (*placed[:2], self.mesh_plan.place_rows(counts), *placed[2:])
