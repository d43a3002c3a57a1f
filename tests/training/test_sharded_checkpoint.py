"""Per-process data positions in a checkpoint: exact with the same process count, the start of
the oldest epoch (said aloud) with another."""

import gzip
import json

from kerastrain.data.pipeline import PipelineState
from kerastrain.training.checkpoint import PIPELINE_FILE
from kerastrain.training.sharded_checkpoint import STATES_DIR, restore_data_position


def write_states(path, states):
    (path / STATES_DIR).mkdir(parents=True)
    for i, state in enumerate(states):
        blob = gzip.compress(json.dumps(state.__dict__).encode())
        (path / STATES_DIR / f"process_{i:05d}.json.gz").write_bytes(blob)


def test_same_process_count_continues_each_share_exactly(tmp_path):
    states = [PipelineState(epoch=2, batches=7, grain={"index": 14}),
              PipelineState(epoch=3, batches=1, grain={"index": 3})]
    write_states(tmp_path, states)
    said = []
    assert restore_data_position(tmp_path, 1, 2, said.append) == states[1]
    assert "epoch 3, after 1 batches of this process's share (1)" in said[0]


def test_another_process_count_restarts_the_oldest_epoch_and_says_so(tmp_path):
    write_states(tmp_path, [PipelineState(epoch=2, batches=7), PipelineState(epoch=3)])
    said = []
    assert restore_data_position(tmp_path, 0, 4, said.append) == PipelineState(epoch=2)
    assert "written by 2 process(es), this run has 4" in said[0]
    assert "epoch 2 from the beginning" in said[0]


def test_a_single_process_checkpoint_resumes_as_before(tmp_path):
    PipelineState(epoch=1, batches=5).save(tmp_path / PIPELINE_FILE)
    said = []
    assert restore_data_position(tmp_path, 0, 1, said.append).batches == 5
    assert said == ["Data position: epoch 1, after 5 batches of the data"]
