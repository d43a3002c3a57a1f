"""Checks a run makes before it writes anything: the output directory can be written, and the
model and batch fit the device (with the planner's figures and the batch that would fit)."""

from __future__ import annotations

from pathlib import Path

from kerastrain.config import RunConfig
from kerastrain.errors import ConfigError, UserError
from kerastrain.training.optimizer import check_kinds
from kerastrain.training.tracking import check_trackers


def check_before_writing(config: RunConfig, output_dir: Path, primary: bool) -> None:
    """Everything that can fail before anything is written, each in one line: the output
    directory is writable, the remote answers (process 0), every ``--tracker`` is installed and
    every kind (optimizer, schedule) is registered."""
    check_output_dir(output_dir)
    if config.cloud.provider and primary:  # open and probe the remote before any work is done
        from kerastrain.storage.probe import open_remote  # the cloud SDKs: only when asked

        open_remote(config.cloud)
    check_trackers(config.output.trackers)
    check_kinds(config)


def check_output_dir(path: Path) -> None:
    """Fail early, before anything is written, when the output directory is unusable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{id(path)}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to output directory {path} ({exc.strerror or exc}); "
            "choose another --output-dir"
        ) from exc


FIT_MARGIN = 1.25  # refuse only what clearly cannot fit: the estimate is within ~25%


def device_memory_bytes() -> tuple[int | None, str]:
    """Memory of the first accelerator (its allocator's limit), or the host's available RAM."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"]), f"{device.device_kind} memory"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available host memory"
    except OSError:
        pass
    return None, ""


def check_memory_fits(config: RunConfig, mesh_shape) -> None:
    """Refuse, with the planner's figures, a configuration that clearly cannot fit the device:
    per device of ``mesh_shape`` (one device is a mesh of one), ``--batch-size`` rows each."""
    from kerastrain.training.mesh_memory import largest_batch_per_device, plan_mesh_memory
    from kerastrain.training.planner import format_bytes

    available, what = device_memory_bytes()
    if available is None:
        return
    need = plan_mesh_memory(config, mesh_shape).total
    if need > FIT_MARGIN * available:
        best = largest_batch_per_device(config, mesh_shape, available)
        advice = (f"--batch-size {best} fits" if best else
                  "no batch size fits: choose a smaller preset or --seq-len")
        raise ConfigError(
            f"this run needs about {format_bytes(need)} per device but the {what} is "
            f"{format_bytes(available)}; {advice} (see `kerastrain plan` with the same options), "
            "or use --gradient-accumulation-steps / --use-mixed-precision"
        )
