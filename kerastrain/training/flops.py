"""Model FLOPs utilization (MFU): how much of the device's peak the training step uses.

``flops_per_token`` follows the PaLM / nanoGPT convention: ``6 N`` for the matmul weights N
(forward 2N, backward 4N) plus ``12 · layers · d_model · seq_len`` for attention scores and
values. Embedding lookups cost no FLOPs, so N counts the transformer's matrices and the output
projection (the tied embedding, used as a matmul there), not the input embedding or positions.

The peak comes from a table of accelerators (dense bf16 / fp32 tensor FLOP/s from the vendors'
data sheets). On CPU there is no data sheet that matches what XLA reaches, so a float32 matmul is
timed (a fraction of a second) and the highest figure ever seen is cached in the user's cache
directory, keyed by CPU, thread count and JAX version: a measurement taken while other work
shares the cores only ever lowers a single reading, so the cache keeps the best one.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from pathlib import Path

from kerastrain.config import ModelConfig

# device_kind substring (lower case) -> (bf16 FLOP/s, fp32 FLOP/s), dense, no sparsity.
ACCELERATOR_PEAKS: dict[str, tuple[float, float]] = {
    "h200": (989e12, 67e12),
    "h100": (989e12, 67e12),  # SXM; PCIe parts are ~25% lower
    "gh200": (989e12, 67e12),
    "b200": (2250e12, 80e12),
    "a100": (312e12, 19.5e12),
    "a10g": (70e12, 35e12),
    "a10": (125e12, 31.2e12),
    "l40s": (362e12, 91.6e12),
    "l4": (121e12, 30.3e12),
    "v100": (125e12, 15.7e12),  # fp16 tensor cores (V100 has no bf16)
    "t4": (65e12, 8.1e12),
    "rtx 4090": (165e12, 82.6e12),
    "tpu v6": (918e12, 918e12),  # TPUs run float32 matmuls through bf16 passes by default
    "tpu v5p": (459e12, 459e12),
    "tpu v5 lite": (197e12, 197e12),
    "tpu v5e": (197e12, 197e12),
    "tpu v4": (275e12, 275e12),
    "tpu v3": (123e12, 123e12),
}


def matmul_parameters(cfg: ModelConfig) -> int:
    """Weights used in matmuls per token: attention, MLP, and the output projection."""
    d, ff, hd = cfg.d_model, cfg.d_ff, cfg.attention_head_dim
    q, kv = hd * cfg.num_heads, hd * (cfg.num_kv_heads or cfg.num_heads)
    mlp = (3 if cfg.use_swiglu else 2) * d * ff
    return cfg.num_layers * (2 * d * q + 2 * d * kv + mlp) + d * cfg.vocab_size


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Training FLOPs (forward + backward) per token: 6 N + 12 · L · d · T."""
    seq = seq_len or cfg.seq_len
    width = cfg.attention_head_dim * cfg.num_heads  # d_model unless --head-dim says otherwise
    return 6.0 * matmul_parameters(cfg) + 12.0 * cfg.num_layers * width * seq


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kerastrain" / "peak_flops.json"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_matmul_peak(dtype: str = "float32", size: int = 1024, repeats: int = 10) -> float:
    """Best FLOP/s of a jitted ``size``² matmul on the default device."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def device_peak_flops(dtype: str = "float32") -> tuple[float, str]:
    """(peak FLOP/s, where the figure comes from) for the first device and ``dtype``."""
    import jax

    device = jax.devices()[0]
    kind = str(getattr(device, "device_kind", "")).lower()
    if device.platform != "cpu":
        for key, (bf16, fp32) in ACCELERATOR_PEAKS.items():
            if key in kind:
                return (bf16 if dtype == "bfloat16" else fp32) * jax.local_device_count(), \
                    f"{kind} data sheet"
    key = f"{device.platform}|{kind}|{_cpu_name()}|{os.cpu_count()}|{jax.__version__}|{dtype}"
    path = _cache_file()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    measured = measure_matmul_peak(dtype)  # forced host devices share the same cores
    if measured > cached.get(key, 0.0):
        cached[key] = measured
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cached, indent=1))
        except OSError:
            pass  # an unwritable cache only means measuring again next time
    return cached[key], f"measured {dtype} matmul, cached in {path}"


class MfuMeter:
    """Turns tokens/s into model FLOPs utilization for one model configuration."""

    def __init__(self, cfg: ModelConfig):
        self.flops_per_token = flops_per_token(cfg)
        self.dtype = "bfloat16" if cfg.mixed_precision else "float32"

    @functools.cached_property
    def _peak(self) -> tuple[float, str]:
        # Measured (on CPU) when first asked, at the first log line: not before the first step.
        return device_peak_flops(self.dtype)

    @property
    def peak(self) -> float:
        return self._peak[0]

    @property
    def peak_source(self) -> str:
        return self._peak[1]

    def __call__(self, tokens_per_sec: float) -> float:
        return tokens_per_sec * self.flops_per_token / self.peak
