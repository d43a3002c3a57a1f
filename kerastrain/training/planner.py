"""Memory planner: bytes a training run needs per device, and the largest batch that fits.

The estimate follows what the jitted training step (``kerastrain.training.loop``) keeps alive at its
peak: float32 weights, AdamW's two float32 moments, float32 gradients, a gradient accumulator
when ``--gradient-accumulation-steps`` > 1, and the activations autodiff saves for the backward
pass. With ``--remat`` only each block's input is kept, plus one block's activations while it
is recomputed: what a memory-aware scheduler (XLA on GPU/TPU) realizes; XLA:CPU hoists the
recomputation and saves little (measured in ``benchmarks/bench_memory.py``). Activation terms are counted per token per layer from the model's
shapes; ``tests/test_planner.py`` checks the total against XLA's own figure for compiled steps.
No keras import here: ``kerastrain plan`` and ``kerastrain presets`` stay fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kerastrain.config import ModelConfig, RunConfig
from kerastrain.model.presets import count_lora_parameters, count_parameters

GIB = 1024**3
LOGITS_PER_CHUNK = 1 << 22  # kerastrain.training.loss.LOGITS_PER_CHUNK (no jax import here)


@dataclass
class MemoryPlan:
    """Bytes per device, by component."""

    parameters: int
    trainable_parameters: int
    weights: int
    optimizer: int
    gradients: int
    accumulator: int
    activations: int
    batch_per_device: int

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.gradients + self.accumulator + self.activations

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def activation_bytes(cfg: ModelConfig, batch: int, seq_len: int | None = None) -> int:
    """Activations saved for the backward pass of one micro-batch (plus the loss's logits).

    Per layer and token, in compute-dtype elements: norm inputs/outputs, the residual stream,
    query/key/value before and after RoPE, attention output and output projection (about 12 d),
    the MLP's hidden tensors (gate, up, product: 3 d_ff, SwiGLU's lean backward in
    ``model/glu.py``; up, activation, their product's input without SwiGLU: 3); with
    ``post_norms`` two more d, with ``qk_norm`` two query widths (the query width is d unless
    ``head_dim`` says otherwise, keys and values are repeated to it); the attention matrices (heads x seq_len, float32, three copies: scores, probabilities and their
    gradient) of the one layer being differentiated (all layers' with an attention soft-cap,
    whose core autodiff differentiates); float32 dropout masks on
    the four residual-path tensors. Per token outside the layers: embeddings and final norm
    (5 d). The loss (:mod:`kerastrain.training.loss`) holds the logits of one chunk at a time
    (XLA fuses the softmax into the gradient: two float32 ``chunk x vocab`` buffers) plus its
    float32 gradients with respect to the hidden states and the output matrix.
    The coefficients were checked against XLA's buffer assignment for the compiled step
    (``measure_training_memory``); on CPU XLA computes bfloat16 in float32, so the mixed
    precision saving shows on accelerators only.
    """
    t = seq_len or cfg.seq_len
    d, ff, h = cfg.d_model, cfg.d_ff, cfg.num_heads
    q = cfg.attention_head_dim * h  # query width; keys and values are repeated to it
    elem = 2 if cfg.mixed_precision else 4
    hidden = 6 * d + 6 * q + 3 * ff
    hidden += (2 * d if cfg.post_norms else 0) + (2 * q if cfg.qk_norm else 0)
    attention = 3 * h * t * 4
    # The attention core recomputes its matrices in the backward pass (model/attention_core.py):
    # only the layer being differentiated holds them; a soft-capped layer (Gemma 2) keeps its own.
    kept = attention if cfg.attn_softcap is not None else 0
    dropout = 4 * d * 4 if cfg.dropout_rate > 0 else 0
    per_token_layer = hidden * elem + kept + dropout
    tokens = batch * t
    layers = cfg.num_layers * tokens * per_token_layer + tokens * (attention - kept)
    if cfg.remat:  # each block keeps its input; one block's activations exist at a time
        layers = cfg.num_layers * tokens * d * elem + tokens * (per_token_layer + attention - kept)
    chunk = min(tokens, max(1, LOGITS_PER_CHUNK // cfg.vocab_size))
    logits = 2 * chunk * cfg.vocab_size * 4 + 2 * tokens * d * 4 + cfg.vocab_size * d * 4
    embeddings = 5 * tokens * d * elem
    return int(layers + logits + embeddings)


def plan_memory(cfg: RunConfig, batch_size: int | None = None) -> MemoryPlan:
    """Bytes per device for ``cfg`` under data parallelism (``--batch-size`` rows per device; the
    number of devices changes the global batch, not what one device holds)."""
    model = cfg.model
    params = count_parameters(model)
    trainable = count_lora_parameters(model) if model.use_lora else params
    total_params = params + (trainable if model.use_lora else 0)
    per_device = batch_size if batch_size is not None else cfg.train.batch_size
    accumulate = cfg.train.gradient_accumulation_steps > 1
    frozen = 0  # DPO's reference without LoRA: the starting weights, a frozen float32 copy
    if cfg.train.objective != "sft" and not model.use_lora:
        from kerastrain.training.objectives import choose_objective

        frozen = 4 * params if choose_objective(cfg.train.objective).reference else 0
    return MemoryPlan(
        parameters=total_params,
        trainable_parameters=trainable,
        weights=4 * total_params + frozen,  # float32 variables, also under mixed_bfloat16
        optimizer=8 * trainable,  # AdamW m and v in float32
        gradients=4 * trainable,
        accumulator=4 * trainable if accumulate else 0,
        activations=activation_bytes(model, per_device),
        batch_per_device=per_device,
    )


def estimate_training_memory(cfg: RunConfig) -> int:
    """Total bytes per device (see :func:`plan_memory`)."""
    return plan_memory(cfg).total


def largest_batch(cfg: RunConfig, memory_bytes: int) -> int:
    """The largest ``--batch-size`` (per device) whose estimate fits ``memory_bytes`` (0: none)."""
    if plan_memory(cfg, batch_size=1).total > memory_bytes:
        return 0
    # The estimate grows with the batch (not quite linearly: the loss's chunk is capped), so a
    # binary search finds the largest batch that fits.
    low, high = 1, 2
    while plan_memory(cfg, batch_size=high).total <= memory_bytes:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if plan_memory(cfg, batch_size=mid).total <= memory_bytes:
            low = mid
        else:
            high = mid
    return int(low)


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def breakdown_lines(plan) -> list[str]:
    """The plan's parts and total per device, one aligned line each (``kerastrain plan``)."""
    parts = ("weights", "optimizer", "gradients", "accumulator", "activations")
    lines = [f"  {part:<12} {format_bytes(getattr(plan, part)):>12}" for part in parts]
    return [*lines, f"  {'total':<12} {format_bytes(plan.total):>12} per device"]


def measure_training_memory(cfg: RunConfig, run_step: bool = False) -> dict:
    """Measured bytes of one real training step of ``cfg`` on the default device.

    Compiles the trainer's own jitted step (``kerastrain.training.loop.make_steps``) and reads XLA's
    buffer assignment: arguments (weights, optimizer state, batch) + outputs + temporaries
    - aliased (donated) buffers. With ``run_step`` it also runs the step and reports the
    process's resident memory growth (``rss_growth``) as a second, noisier measure.
    """
    import os

    import jax
    import keras
    import numpy as np

    from kerastrain.model.gpt import apply_lora, apply_precision, build_model
    from kerastrain.training.optimizer import make_optimizer
    from kerastrain.training.steps import make_steps

    def rss() -> int:
        with open(f"/proc/{os.getpid()}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    start_rss = rss()  # after the imports: their memory is not the step's
    apply_precision(cfg.model)
    try:
        model = build_model(cfg.model)
        if cfg.model.use_lora:
            apply_lora(model, cfg.model.lora_rank)
        optimizer = make_optimizer(cfg, cfg.train.learning_rate, model)
        train_step, _ = make_steps(model, optimizer)
        batch = cfg.train.batch_size
        x = np.zeros((batch, cfg.model.seq_len), "int32")
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        compiled = train_step.lower(state, x, x).compile()
        stats = compiled.memory_analysis()
        result = {
            "arguments": int(stats.argument_size_in_bytes),
            "outputs": int(stats.output_size_in_bytes),
            "temporaries": int(stats.temp_size_in_bytes),
            "aliased": int(stats.alias_size_in_bytes),
        }
        result["peak"] = (
            result["arguments"] + result["outputs"] + result["temporaries"] - result["aliased"]
        )
        if run_step:
            loss, state = compiled(state, x, x)
            jax.block_until_ready(loss)
            result["rss_growth"] = rss() - start_rss
        return result
    finally:
        keras.mixed_precision.set_global_policy("float32")
