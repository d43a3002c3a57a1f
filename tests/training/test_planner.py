"""The memory planner against XLA's measured memory for real compiled training steps."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kerastrain.config import RunConfig, TrainConfig
from kerastrain.model.presets import count_parameters, preset_config
from kerastrain.training.planner import (
    GIB,
    largest_batch,
    measure_training_memory,
    plan_memory,
)


def run_config(preset: str, batch: int, **model) -> RunConfig:
    return RunConfig(model=preset_config(preset, **model), train=TrainConfig(batch_size=batch))


@pytest.mark.parametrize("preset,batch", [("nano", 8), ("tiny", 4)])
def test_estimate_is_within_25_percent_of_measured(preset, batch):
    cfg = run_config(preset, batch)
    measured = measure_training_memory(cfg)["peak"]
    estimate = plan_memory(cfg).total
    assert abs(estimate / measured - 1) <= 0.25, (estimate, measured)


def test_components():
    cfg = run_config("small", 4)
    plan = plan_memory(cfg)
    params = count_parameters(cfg.model)
    assert plan.weights == 4 * params and plan.optimizer == 8 * params
    assert plan.gradients == 4 * params and plan.accumulator == 0
    cfg = cfg.replace(train=TrainConfig(batch_size=4, gradient_accumulation_steps=4))
    assert plan_memory(cfg).accumulator == 4 * params
    lora = run_config("small", 4, use_lora=True, lora_rank=8)
    lora_plan = plan_memory(lora)
    assert lora_plan.trainable_parameters < params // 40
    assert lora_plan.optimizer == 8 * lora_plan.trainable_parameters
    mixed = plan_memory(run_config("small", 4, mixed_precision=True))
    assert mixed.activations < plan.activations and mixed.weights == plan.weights
    assert plan_memory(run_config("small", 8)).activations > plan.activations


def test_largest_batch_fits_and_one_more_does_not():
    cfg = run_config("medium", 1)
    memory = 24 * GIB
    best = largest_batch(cfg, memory)
    assert best >= 1
    assert plan_memory(cfg, batch_size=best).total <= memory
    assert plan_memory(cfg, batch_size=best + 1).total > memory
    assert largest_batch(run_config("xlarge", 1), 4 * GIB) == 0



def test_plan_command():
    from kerastrain.cli import cli

    result = CliRunner().invoke(
        cli, ["plan", "--preset", "tiny", "--batch-size", "16", "--memory-gb", "8", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["parameters"] == count_parameters(preset_config("tiny"))
    assert data["largest_batch"] >= 16 and data["total"] < 8 * GIB
    text = CliRunner().invoke(cli, ["plan", "--preset", "nano", "--batch-size", "4"])
    assert text.exit_code == 0 and "optimizer" in text.output and "total" in text.output


def test_plan_takes_batch_size_per_device_as_run_does():
    from kerastrain.cli import cli

    def plan(*extra):
        result = CliRunner().invoke(cli, ["plan", "--preset", "nano", "--batch-size", "8",
                                          "--json", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    one, four = plan(), plan("--num-devices", "4")
    assert four["total"] == one["total"] and four["batch_per_device"] == 8
    assert (one["global_batch"], four["global_batch"]) == (8, 32)
