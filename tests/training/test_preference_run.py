"""``kerastrain run --objective dpo|simpo|orpo`` end to end on a preference JSONL file: an SFT run,
then preference tuning from its checkpoint (full weights, and LoRA); the first DPO loss is log 2
(policy = reference), TRL's metrics are logged, and bad requests are one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import TINY, invoke
from tests.training.test_chat_training import _refused
from tests.training.test_training import _metrics


def preference_file(path: Path, n: int = 60) -> Path:
    """Sums: the chosen reply is right, the rejected one off by one (or more)."""
    rows = [{"prompt": f"{i} + {i % 7} =", "chosen": f" {i + i % 7}.",
             "rejected": f" {i + i % 7 + 1 + i % 3}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sft_file(path: Path, n: int = 60) -> Path:
    rows = [{"prompt": f"{i} + {i % 7} =", "completion": f" {i + i % 7}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def sft_checkpoint(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sft")
    out = tmp / "sft"
    done = invoke("run", "--output-dir", str(out), *TINY, "--dropout-rate", "0",
                  "--dataset-id", str(sft_file(tmp / "sft.jsonl")), "--max-steps", "3")
    assert done.exit_code == 0, done.output
    return out / "final_checkpoint"


@pytest.mark.parametrize("objective, extra", [
    ("dpo", []), ("dpo", ["--use-lora", "--lora-rank", "4"]), ("simpo", []), ("orpo", []),
])
def test_preference_tuning_from_an_sft_checkpoint(tmp_path, sft_checkpoint, objective, extra,
                                                  caplog):
    import logging

    import jax

    out = tmp_path / objective
    data = preference_file(tmp_path / "pref.jsonl")
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles():
        done = invoke("run", "--output-dir", str(out), *TINY, "--dropout-rate", "0",
                      "--dataset-id", str(data), "--objective", objective,
                      "--init-from", str(sft_checkpoint), "--max-steps", "4", "--log-every", "1",
                      "--gradient-accumulation-steps", "2", "--val-split", "train",
                      "--max-val-examples", "8", *extra)
    assert done.exit_code == 0, done.output
    # The pair step, compiled ahead of its first batch, is traced once in the run.
    assert sum(r.getMessage().startswith("Finished tracing train_step for jit")
               for r in caplog.records) == 1
    assert "Data format: preference" in done.output
    assert "chat template" not in done.output  # string pairs: no template, no chat markers
    train = _metrics(out)
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for r in train:
        for name in ("rewards/chosen", "rewards/rejected", "rewards/accuracies",
                     "rewards/margins", "logps/chosen", "logps/rejected"):
            assert math.isfinite(r[name]), (name, r)
        assert 0 <= r["rewards/accuracies"] <= 1
        assert r["rewards/margins"] == pytest.approx(r["rewards/chosen"] - r["rewards/rejected"],
                                                     abs=1e-5)
    if objective == "dpo":  # the first update's policy is the reference
        assert train[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
        assert train[0]["rewards/chosen"] == pytest.approx(0, abs=1e-6)
        assert "Reference model: " + ("the base model" if extra else "the starting weights") \
            in done.output
        assert train[-1]["loss"] != train[0]["loss"]
    if objective == "orpo":
        assert "log_odds_ratio" in train[0]
    (final,) = _metrics(out, "eval")
    assert final["val_pairs"] == 8 and math.isfinite(final["val_loss"])
    assert 0 <= final["val_rewards/accuracies"] <= 1
    # `kerastrain eval` scores the run's validation pairs as the run did (DPO: against the
    # --init-from model loaded beside the checkpoint; LoRA: the checkpoint merged).
    scored = invoke("eval", str(out), "--json")
    assert scored.exit_code == 0, scored.output
    result = json.loads(scored.output)
    assert result["pairs"] == 8
    assert result["loss"] == pytest.approx(final["val_loss"], rel=1e-5)
    for name in ("rewards/chosen", "rewards/accuracies", "logps/rejected"):
        assert result[name] == pytest.approx(final[f"val_{name}"], rel=1e-4, abs=1e-5), name
    summary = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert summary["examples_trained"] > 0 and summary["overlong_dropped"] == 0


def test_a_preference_run_needs_init_from_unless_asked(tmp_path):
    data = preference_file(tmp_path / "pref.jsonl")
    line = _refused(tmp_path, "--dataset-id", str(data), "--objective", "dpo")
    assert "--init-from" in line and "--preference-from-scratch" in line
    done = invoke("run", "--output-dir", str(tmp_path / "scratch"), *TINY, "--max-steps", "2",
                  "--dropout-rate", "0", "--dataset-id", str(data), "--objective", "dpo",
                  "--preference-from-scratch", "--log-every", "1")
    assert done.exit_code == 0, done.output
    assert _metrics(tmp_path / "scratch")[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_objective_and_data_must_agree(tmp_path):
    pref = preference_file(tmp_path / "pref.jsonl")
    assert "pass --objective dpo" in _refused(tmp_path, "--dataset-id", str(pref))
    sft = sft_file(tmp_path / "sft.jsonl")
    assert "trains on preference pairs" in _refused(
        tmp_path, "--dataset-id", str(sft), "--objective", "orpo", "--preference-from-scratch")
    assert "drop --train-on-prompt" in _refused(tmp_path, "--dataset-id", str(pref),
                                                "--objective", "simpo", "--train-on-prompt",
                                                "--preference-from-scratch")
    assert "unknown --objective 'kto'" in _refused(tmp_path, "--dataset-id", str(sft),
                                                   "--objective", "kto")


def test_dpo_on_a_2_device_mesh_equals_one_device(tmp_path, sft_checkpoint):
    """Both the trained weights and the frozen reference sharded over --fsdp 2 (pairs whole in
    each device's rows): the same losses and rewards as on one device."""
    from tests.helpers import kerastrain

    data = preference_file(tmp_path / "pref.jsonl")
    args = [*TINY, "--batch-size", "2", "--dropout-rate", "0", "--dataset-id", str(data),
            "--objective", "dpo", "--init-from", str(sft_checkpoint), "--max-steps", "3",
            "--log-every", "1"]
    one = kerastrain("run", "--output-dir", str(tmp_path / "one"), *args, "--batch-size", "4")
    assert one.returncode == 0, one.stderr
    mesh = kerastrain("run", "--output-dir", str(tmp_path / "mesh"), *args, "--fsdp", "2",
                      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert mesh.returncode == 0, mesh.stderr
    for a, b in zip(_metrics(tmp_path / "one"), _metrics(tmp_path / "mesh"), strict=True):
        for name in ("loss", "rewards/chosen", "logps/rejected"):
            assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-6), (name, a["step"])
        # At step 1 the policy is its reference: every margin is 0 up to rounding (a mesh sums
        # in another order: 4.8e-08), so which side of 0 a pair falls is rounding, not training.
        if abs(a["rewards/margins"]) > 1e-6:
            assert b["rewards/accuracies"] == a["rewards/accuracies"], a["step"]


def test_a_lora_dpo_run_exports_merged_to_hugging_face(tmp_path):
    """The tuned model (adapters merged) exported and read back computes what the run's
    checkpoint computes."""
    import numpy as np

    from kerastrain.model.loading import load, load_for_inference

    data = preference_file(tmp_path / "pref.jsonl")
    out = tmp_path / "dpo"
    args = [*TINY, "--tokenizer", "bpe", "--vocab-size", "300", "--dropout-rate", "0",
            "--dataset-id", str(data), "--objective", "dpo", "--preference-from-scratch",
            "--use-lora", "--lora-rank", "4", "--learning-rate", "3e-2", "--max-steps", "3",
            "--log-every", "1"]
    done = invoke("run", "--output-dir", str(out), *args)
    assert done.exit_code == 0, done.output
    exported = invoke("export", str(out), "--to", str(tmp_path / "hf"))
    assert exported.exit_code == 0, exported.output
    model, tokenizer = load(out)
    again, _, _ = load_for_inference(tmp_path / "hf", seq_len=32)
    ids = np.asarray([tokenizer.encode_batch(["7 + 3 = 10."])[0]], np.int32)
    np.testing.assert_allclose(np.asarray(again(ids)), np.asarray(model(ids)), rtol=1e-4,
                               atol=1e-5)
    # The adapters moved the policy away from the base model (its DPO loss left log 2).
    assert abs(_metrics(out)[-1]["loss"] - math.log(2)) > 1e-3


def test_conversations_sharing_a_prefix_train_through_the_chat_template(tmp_path):
    """UltraFeedback's form (whole conversations, no prompt column), tokenized by 2 worker
    processes: rendered with ChatML, replies trained, the first DPO loss log 2."""
    rows = [{"chosen": [{"role": "user", "content": f"What is {i} plus {i % 5}?"},
                        {"role": "assistant", "content": f"{i + i % 5}."}],
             "rejected": [{"role": "user", "content": f"What is {i} plus {i % 5}?"},
                          {"role": "assistant", "content": f"It is {i + i % 5 + 1}, I think."}]}
            for i in range(40)]
    data = tmp_path / "ultrafeedback.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    done = invoke("run", "--output-dir", str(out), *TINY, "--seq-len", "96", "--dropout-rate",
                  "0", "--dataset-id", str(data), "--objective", "dpo",
                  "--preference-from-scratch", "--max-steps", "2", "--log-every", "1",
                  "--data-workers", "2")
    assert done.exit_code == 0, done.output
    assert "(chat template: built-in ChatML)" in " ".join(done.output.split())
    train = _metrics(out)
    assert train[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    # Each update trains the replies only: far fewer tokens than the rows hold.
    assert all(0 < r["trained_tokens"] < 4 * 96 / 2 for r in train), train
    summary = _metrics(out, "summary")[-1]  # the longest pairs were cut to fit, and trained
    assert summary["overlong_truncated"] > 0 and summary["overlong_dropped"] == 0
    # `kerastrain chat` on the tuned model: the greedy decode of the rendered prompt, cut at the
    # template's turn end, as the same conversation in this process gives it.
    from kerastrain.model.chat import Conversation
    from kerastrain.model.decoder import make_sampler
    from kerastrain.model.loading import chat_template_of, load

    model, tokenizer = load(out)
    conversation = Conversation(model, tokenizer, chat_template_of(out / "final_checkpoint"),
                                make_sampler(temperature=0), max_new_tokens=12)
    expected = "".join(conversation.reply("What is 3 plus 3?"))
    said = invoke("chat", str(out), "--temperature", "0", "--max-new-tokens", "12",
                  input="What is 3 plus 3?\n/exit\n")
    assert said.exit_code == 0 and said.stdout == expected + "\n", said.output


def test_dpo_with_muon_on_2_processes_trains_every_pair_of_its_epoch(tmp_path, sft_checkpoint):
    """Two processes (2 CPU devices each) share 37 pairs, each counting its own share's batches:
    the run's first loss is log 2 (policy = reference in every process), its length is the
    largest share's, and the summary counts all 37 pairs once, summed over the processes."""
    from tests.helpers import kerastrain
    from tests.training.test_epochs import _resolved
    from tests.training.test_mixture_training import _summary

    data = preference_file(tmp_path / "pref.jsonl", 37)
    out = tmp_path / "dpo"
    done = kerastrain("launch", "--num-processes", "2", "--devices-per-process", "2", "--",
                      "run", "--output-dir", str(out), *TINY, "--batch-size", "1",
                      "--dropout-rate", "0", "--dataset-id", str(data), "--objective", "dpo",
                      "--init-from", str(sft_checkpoint), "--epochs", "1", "--log-every", "1",
                      "--eval-every", "1000", "--optimizer", "muon", env={"COLUMNS": "1000"},
                      timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = _summary(out)
    assert summary["first_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert summary["reason"] == "epochs completed"
    assert summary["steps"] == _resolved(out)["total_steps"]
    assert summary["examples_trained"] == 37
    assert (summary["overlong_truncated"], summary["overlong_dropped"]) == (0, 0)
