"""``kerastrain launch``: start N local processes of one multi-process run and watch them.

For testing multi-process training on one machine and for CPU boxes; on clusters the scheduler
(SLURM, mpirun, a TPU pod) starts the processes and JAX reads their ranks from the environment.
Each process gets ``--coordinator-address 127.0.0.1:PORT --num-processes N --process-id I``
and, with ``--devices-per-process K``, K forced host (CPU) devices. If one process dies, the
others cannot go on (every step is a collective over all of them): the launcher says which one
died, stops the rest at once and exits with its code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from kerastrain.errors import EXIT_PROCESS_LOST, ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch(num_processes: int, args: list[str], devices_per_process: int | None = None,
           port: int | None = None, say=print) -> int:
    """Run ``kerastrain ARGS`` in ``num_processes`` processes; returns the exit code."""
    if num_processes < 1:
        raise ConfigError(f"--num-processes must be at least 1, got {num_processes}")
    if not args or args[0] != "run":
        raise ConfigError("launch runs `kerastrain run`: kerastrain launch --num-processes N -- "
                          "run [OPTIONS]")
    taken = {"--coordinator-address", "--num-processes", "--process-id"}
    if taken & {a.split("=")[0] for a in args}:
        raise ConfigError("launch sets --coordinator-address, --num-processes and --process-id "
                          "itself; leave them out")
    address = f"127.0.0.1:{port or free_port()}"
    env = dict(os.environ)
    if devices_per_process:
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices_per_process}"
    procs = [
        subprocess.Popen([sys.executable, "-m", "kerastrain", *args, "--coordinator-address",
                          address, "--num-processes", str(num_processes), "--process-id", str(i)],
                         env=env, start_new_session=True)  # signals reach them once, from here
        for i in range(num_processes)
    ]

    def forward(signum, frame):  # Ctrl-C / a scheduler's SIGTERM: every process saves and stops
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed and all(c in (130, 143) for _, c in failed):  # stopped by a signal
                for p in procs:  # the others are saving the same checkpoint: let them finish
                    p.wait()
                return failed[0][1]
            if failed:
                # Not one that stopped because another process died (it exits at once, too).
                i, code = next((f for f in failed if f[1] != EXIT_PROCESS_LOST), failed[0])
                say(f"kerastrain launch: process {i} {_describe(code)}; the others cannot go on "
                    "without it and are stopped. Run the same command again to resume from the "
                    "last checkpoint.")
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                for p in procs:
                    p.wait()
                return code if code > 0 else 128 - code
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
