"""Several processes, one run: starting JAX's multi-controller runtime and talking between processes.

Every process runs the same ``kerastrain run``; JAX connects them through a coordinator (process
0's ``HOST:PORT``) and XLA's collectives (NCCL on GPUs, ICI on TPUs, gloo between CPU processes).
The processes are named by ``--coordinator-address --num-processes --process-id`` or by the
environment JAX already understands (SLURM, Open MPI, TPU pods).

Why ``jax.distributed.initialize`` and not ``keras.distribution.initialize``: Keras' function makes
the same call but cannot pass the timeouts, and JAX's defaults (300 s to connect, 100 s without a
heartbeat before a lost process is noticed) would leave a user staring at a silent hang.
"""

from __future__ import annotations

import os
import socket
import time

from kerastrain.config import RunConfig
from kerastrain.errors import ConfigError, UserError

CONNECT_TIMEOUT_S = int(os.environ.get("KERASTRAIN_CONNECT_TIMEOUT", "60"))
HEARTBEAT_TIMEOUT_S = int(os.environ.get("KERASTRAIN_HEARTBEAT_TIMEOUT", "20"))

# Environments in which JAX finds the processes itself (jax._src.clusters).
_CLUSTER_HINTS = (("SLURM_NTASKS", "SLURM_STEP_NODELIST"), ("OMPI_COMM_WORLD_SIZE",),
                  ("TPU_WORKER_HOSTNAMES",))


def _cluster_in_environment() -> bool:
    for names in _CLUSTER_HINTS:
        if all(os.environ.get(n) for n in names):
            value = os.environ[names[0]]
            many = "," in value if names[0] == "TPU_WORKER_HOSTNAMES" else int(value or 1) > 1
            if many:
                return True
    return False


def _wait_for_coordinator(address: str, timeout: float) -> None:
    """Bounded wait until process 0 listens: JAX itself aborts the process (no Python error)
    when it cannot register, so the unreachable case is caught here first."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.5)
    raise UserError(
        f"cannot reach the coordinator {address} within {timeout:.0f} s ({last}); start process "
        "0 first, or check --coordinator-address and the network"
    )


def initialize_processes(config: RunConfig) -> int:
    """Join the run's processes (before any other JAX call); returns the process count."""
    d = config.distribution
    named = any(v is not None for v in (d.coordinator_address, d.num_processes, d.process_id))
    if not named and not _cluster_in_environment():
        return 1
    import jax

    if named:
        if d.coordinator_address is None or d.num_processes is None or d.process_id is None:
            raise ConfigError("a multi-process run needs all of --coordinator-address HOST:PORT, "
                              "--num-processes N and --process-id I")
        host, _, port = d.coordinator_address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--coordinator-address {d.coordinator_address}: expected HOST:PORT")
        if d.num_processes < 1:
            raise ConfigError(f"--num-processes must be at least 1, got {d.num_processes}")
        if not 0 <= d.process_id < d.num_processes:
            raise ConfigError(f"--process-id {d.process_id} is out of range: with --num-processes "
                              f"{d.num_processes} it must be between 0 and {d.num_processes - 1}")
        if d.num_processes == 1:
            return 1
        if d.process_id > 0:
            _wait_for_coordinator(d.coordinator_address, CONNECT_TIMEOUT_S)
    # CPU processes exchange tensors through gloo (GPU/TPU use their own collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=d.coordinator_address, num_processes=d.num_processes,
        process_id=d.process_id, initialization_timeout=CONNECT_TIMEOUT_S,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
    )
    return jax.process_count()


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op in one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def gather_bytes(blob: bytes) -> list[bytes]:
    """Every process's ``blob``, in process order (a collective: all processes must call it)."""
    import jax
    import numpy as np

    if jax.process_count() == 1:
        return [blob]
    from jax.experimental import multihost_utils

    sizes = multihost_utils.process_allgather(np.array([len(blob)], np.int64))
    longest = int(np.max(sizes))
    padded = np.zeros(longest, np.uint8)
    padded[: len(blob)] = np.frombuffer(blob, np.uint8)
    rows = multihost_utils.process_allgather(padded[None, :], tiled=True)
    return [bytes(rows[i, : int(sizes[i][0])]) for i in range(rows.shape[0])]


def summed_over_processes(counts: dict) -> dict:
    """Every process's data counts added up (a collective in a multi-process run)."""
    import jax

    if jax.process_count() == 1:
        return counts
    import json

    from kerastrain.data.counts import summed

    return summed([json.loads(b) for b in gather_bytes(json.dumps(counts).encode())])


def lost_process_message(exc: BaseException) -> str | None:
    """One line for an error that says another process of this multi-process run is gone, else
    None.

    When a process dies (``kill -9``, a crash, its machine lost), the collectives of the others
    fail at once: between CPU processes gloo raises "Gloo ... failed: ... Connection reset by
    peer". Without this line the survivor would end on that traceback, then wait out the heartbeat
    timeout in JAX's shutdown barrier at exit and abort with JAX's fatal message."""
    import sys

    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized() or "Gloo" not in str(exc):
        return None
    detail = str(exc).strip().splitlines()[0]
    return (f"another process of this run stopped, so this one cannot go on (a collective between "
            f"the processes failed: {detail}). Run the same command again (in every process) to "
            "resume from the last checkpoint.")


def exit_at_once(message: str, code: int) -> None:
    """Print ``message`` and end the process without the exit handlers: JAX's would wait for the
    lost process in its shutdown barrier until the heartbeat timeout, then abort."""
    import sys

    import click

    click.echo(f"Error: {message}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class SilentHooks:
    """Stands in for the plugin hooks on processes other than 0: they write nothing."""

    def __getattr__(self, name):
        return lambda **kwargs: []


class DiscardedMetrics:
    """The metrics log of processes other than 0."""

    def write(self, kind: str, step: int, values: dict) -> None:
        pass

    def close(self) -> None:
        pass


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is set in any process (a collective: all processes must call it)."""
    import jax

    if jax.process_count() == 1:
        return flag
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))
