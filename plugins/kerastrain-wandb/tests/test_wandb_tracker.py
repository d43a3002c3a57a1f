"""--tracker wandb (plugins/kerastrain-wandb) without network: an offline run, read back."""

from __future__ import annotations

import json
import struct

import pytest

from kerastrain.testing import TINY_RUN_ARGS as TINY
from kerastrain.testing import run_command as kerastrain

wandb = pytest.importorskip("wandb")


def wandb_records(path):
    """The records of an offline ``run-*.wandb`` file. Hand-written because wandb no longer
    ships a reader: the file is a 7-byte header (":W&B", magic, version) then LevelDB's log
    format (32 KiB blocks of [crc32, length, type] chunks; types 1 full, 2 first, 3 middle,
    4 last) holding protobuf ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def test_without_network_or_key_the_run_is_logged_offline(tmp_path, monkeypatch):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc key
    out = tmp_path / "out"
    # In its own process, as a user runs it: wandb's service writes the offline file only when
    # the run's stream closes, after finish() returns; the process's exit waits for that.
    result = kerastrain("run", "--output-dir", str(out), *TINY, "--log-every", "1",
                        "--eval-every", "2", "--max-steps", "3", "--tracker", "wandb")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "W&B: offline (no W&B API key" in (result.stdout + result.stderr).replace("\n", " ")
    (path,) = out.glob("wandb/offline-run-*/run-*.wandb")
    history: dict[int, dict] = {}
    config, artifacts, kinds = {}, [], []
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                   for i in record.history.item}
            history[record.history.step.num] = row
        elif kind == "artifact":
            artifacts.append((record.artifact.name, record.artifact.type,
                              {e.path for e in record.artifact.manifest.contents}))
        elif kind in ("run", "config"):  # the config comes with the run or as its own record
            updates = record.run.config.update if kind == "run" else record.config.update
            config.update({i.key: json.loads(i.value_json) for i in updates})
        kinds.append(kind)
    assert config.get("train", {}).get("batch_size") == 4, (kinds, sorted(config))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r["loss"] for r in records if r["kind"] == "train"}
    evals = {r["step"]: r["val_loss"] for r in records if r["kind"] == "eval"}
    assert {s: row["loss"] for s, row in history.items()} == train and len(train) == 3
    assert {s: row["val_loss"] for s, row in history.items() if "val_loss" in row} == evals
    assert ("out-final", "model") == artifacts[0][:2] and "state.json" in artifacts[0][2]
    assert any(p.startswith("state/model/") for p in artifacts[0][2])
    assert (out / "wandb_run_id").read_text().strip() in path.name
