"""The planner on a mesh: per-device bytes with FSDP / tensor parallel, largest per-device batch."""

import json

from kerastrain.config import DistributionConfig, ModelConfig, RunConfig, TrainConfig
from kerastrain.model.presets import resolve_preset
from kerastrain.training.distribution import MeshShape
from kerastrain.training.mesh_memory import largest_batch_per_device, plan_mesh_memory
from kerastrain.training.planner import GIB, plan_memory
from tests.helpers import invoke


def small(batch: int = 8) -> RunConfig:
    return RunConfig(model=ModelConfig(**resolve_preset("small")),
                     train=TrainConfig(batch_size=batch))


def test_fsdp_and_tensor_parallel_divide_the_state_and_tp_the_activations():
    cfg = small()
    one = plan_memory(cfg)
    data = plan_mesh_memory(cfg, MeshShape(data=8))
    assert data.total == one.total  # plain data parallel: each device holds everything
    fsdp = plan_mesh_memory(cfg, MeshShape(fsdp=8))
    assert fsdp.weights * 8 >= one.weights and fsdp.weights <= one.weights / 8 + 1
    assert fsdp.optimizer <= one.optimizer / 8 + 1
    assert fsdp.activations == one.activations
    tp = plan_mesh_memory(cfg, MeshShape(fsdp=4, model=2))
    assert tp.weights <= one.weights / 8 + 1
    # two devices share 16 rows: more than 8 rows' activations, less than 16 rows'
    assert one.activations < tp.activations < plan_memory(cfg, batch_size=16).activations


def test_largest_per_device_batch_fits_and_one_more_does_not():
    cfg, shape, memory = small(), MeshShape(fsdp=4, model=2), 8 * GIB
    best = largest_batch_per_device(cfg, shape, memory)
    assert best >= 1
    assert plan_mesh_memory(cfg, shape, best).total <= memory
    assert plan_mesh_memory(cfg, shape, best + 1).total > memory


def test_plan_command_reports_the_mesh():
    result = invoke("plan", "--preset", "small", "--batch-size", "4", "--fsdp", "4",
                    "--tensor-parallel", "2", "--memory-gb", "8", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["mesh"] == {"data": 1, "fsdp": 4, "model": 2}
    assert data["global_batch"] == 32 and data["largest_batch_per_device"] >= 4
    bad = invoke("plan", "--preset", "small", "--tensor-parallel", "3")
    assert bad.exit_code == 2 and "must divide --num-heads" in bad.output


def test_a_tensor_parallel_group_must_stay_in_one_process():
    import pytest

    from kerastrain.errors import ConfigError
    from kerastrain.training.distribution import resolve_mesh

    cfg = small().replace(distribution=DistributionConfig(tensor_parallel=2))
    assert resolve_mesh(cfg, 4, local_devices=2) == MeshShape(data=2, model=2)
    with pytest.raises(ConfigError, match="the batch cannot be split"):
        resolve_mesh(cfg, 2, local_devices=1)
    cfg = cfg.replace(distribution=DistributionConfig(tensor_parallel=2, data_parallel=3))
    with pytest.raises(ConfigError, match="has 6 devices but 4 are present"):
        resolve_mesh(cfg, 4)
