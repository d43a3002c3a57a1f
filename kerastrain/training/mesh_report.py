"""``kerastrain plan`` with a mesh (``--data-parallel/--fsdp/--tensor-parallel``): the per-device
figures of :mod:`kerastrain.training.mesh_memory`, as text or JSON."""

from __future__ import annotations

import json

import click

from kerastrain.config import RunConfig
from kerastrain.training.distribution import MeshShape, resolve_mesh
from kerastrain.training.mesh_memory import largest_batch_per_device, plan_mesh_memory
from kerastrain.training.planner import GIB, breakdown_lines


def report_mesh_plan(config: RunConfig, memory_gb: float | None, as_json: bool) -> dict:
    d = config.distribution
    fsdp, tp = d.fsdp or 1, d.tensor_parallel or 1
    devices = (d.data_parallel or 1) * fsdp * tp
    shape: MeshShape = resolve_mesh(config, devices)  # checks divisibility too
    plan = plan_mesh_memory(config, shape)
    result = {"preset": config.preset, "mesh": shape.__dict__, "devices": devices,
              "global_batch": config.train.batch_size * devices, **plan.as_dict()}
    if memory_gb is not None:
        result["memory_bytes"] = int(memory_gb * GIB)
        result["largest_batch_per_device"] = largest_batch_per_device(
            config, shape, result["memory_bytes"])
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return result
    click.echo(f"Mesh: {devices} devices ({shape.describe()}); batch "
               f"{config.train.batch_size} per device, global batch {result['global_batch']}; "
               f"{plan.parameters:,} parameters")
    click.echo("\n".join(breakdown_lines(plan)))
    if memory_gb is not None:
        fits = "fits" if plan.total <= result["memory_bytes"] else "does NOT fit"
        click.echo(f"In {memory_gb:g} GiB per device: this batch {fits}; largest --batch-size "
                   f"(per device) that fits: {result['largest_batch_per_device']}")
    return result
