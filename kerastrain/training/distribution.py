"""Many devices, one program: the device mesh, the layouts of our weights and the batch sharding.

The training step (``kerastrain.training.loop``) is written as if for one device; XLA's SPMD
partitioner splits it once the state and the batch carry ``NamedSharding``s. Those are declared
here, by name, through Keras' own ``keras.distribution`` API:

- a ``DeviceMesh`` with three named axes: ``data`` (plain data parallel), ``fsdp`` (data parallel
  whose weights, gradients and optimizer state are also sharded over it, ZeRO-3 style) and
  ``model`` (Megatron-style tensor parallel: attention heads and MLP columns split);
- a ``LayoutMap`` from our layer paths (``block_N/attention/query/kernel`` ...) to mesh axes,
  used by ``ModelParallel`` when the model and optimizer are built, so their variables are created
  sharded (optimizer moments take their weight's layout);
- the batch: rows split over ``data`` × ``fsdp`` (``tensor-parallel`` devices of one group see the
  same rows); in several processes each process contributes its local rows and
  ``jax.make_array_from_process_local_data`` assembles the global batch.

``--batch-size`` is per device (as in MaxText's ``per_device_batch_size``): the global batch is
``batch_size × device count`` whatever the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

from kerastrain.config import ModelConfig, RunConfig
from kerastrain.errors import ConfigError

AXES = ("data", "fsdp", "model")


@dataclass(frozen=True)
class MeshShape:
    """Devices along each mesh axis."""

    data: int = 1
    fsdp: int = 1
    model: int = 1

    @property
    def devices(self) -> int:
        return self.data * self.fsdp * self.model

    def describe(self) -> str:
        return f"data {self.data} x fsdp {self.fsdp} x tensor {self.model}"


def resolve_mesh(config: RunConfig, device_count: int, local_devices: int | None = None,
                 ) -> MeshShape:
    """The mesh for ``device_count`` devices (``local_devices`` of them in this process, when
    there are several processes); unnamed ``--data-parallel`` takes what is left."""
    d = config.distribution
    fsdp, tp = d.fsdp or 1, d.tensor_parallel or 1
    for name, value in (("--data-parallel", d.data_parallel), ("--fsdp", d.fsdp),
                        ("--tensor-parallel", d.tensor_parallel)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    data = d.data_parallel if d.data_parallel is not None else device_count // (fsdp * tp)
    shape = MeshShape(max(data, 1), fsdp, tp)
    if shape.devices != device_count:
        raise ConfigError(
            f"the mesh {shape.describe()} has {shape.devices} devices but {device_count} are "
            f"present; make --data-parallel x --fsdp x --tensor-parallel equal {device_count}"
        )
    m = config.model
    if tp > 1 and (m.num_heads % tp or m.d_ff % tp):
        raise ConfigError(
            f"--tensor-parallel {tp} must divide --num-heads ({m.num_heads}) and --d-ff "
            f"({m.d_ff}); choose a tensor-parallel size that divides both"
        )
    if local_devices is not None and local_devices != device_count and local_devices % tp:
        # Each process feeds the rows of its own devices; a tensor-parallel group spread over two
        # processes would need the same rows from both, which read different documents.
        raise ConfigError(
            f"the batch cannot be split: --tensor-parallel {tp} must divide the {local_devices} "
            "devices of each process, so that a tensor-parallel group stays in one process"
        )
    return shape


def layout_rules(shape: MeshShape, model: ModelConfig) -> dict[str, tuple]:
    """Regex of a variable path -> one mesh axis (or None) per dimension.

    Megatron-style: query/key/value and the MLP's gate/up split their output columns (heads are
    contiguous column blocks), the attention output and MLP down projections their input rows, so
    each block needs one all-reduce per sub-layer. FSDP shards the other dimension. A dimension
    the axis does not divide stays whole (XLA needs even shards). Variables no rule names (LoRA
    adapters, RNG states) are replicated.
    """
    fsdp = "fsdp" if shape.fsdp > 1 and model.d_model % shape.fsdp == 0 else None
    tp = "model" if shape.model > 1 else None
    vocab_tp = tp if tp and model.vocab_size % shape.model == 0 else None
    return {
        r"^block_\d+/attention/(query|key|value)/kernel$": (fsdp, tp),
        r"^block_\d+/attention/output/kernel$": (tp, fsdp),
        r"^block_\d+/mlp/(gate|up)/kernel$": (fsdp, tp),
        r"^block_\d+/mlp/down/kernel$": (tp, fsdp),
        r"^token_embedding/embeddings$": (vocab_tp, fsdp),
        r"^position_embedding/embeddings$": (None, fsdp),
        # (not the per-head q/k norms of --qk-norm: head_dim wide, left whole)
        r"(?<!query_)(?<!key_)norm/(scale|gamma|beta)$": (fsdp,),
    }


class MeshPlan:
    """The mesh of this run and everything sharded over it (see the module docstring)."""

    def __init__(self, config: RunConfig):
        import jax
        import keras

        self.shape = resolve_mesh(config, jax.device_count(), jax.local_device_count())
        d = config.distribution
        # One device and no mesh asked for: the records say "one device" (as they always have).
        self.single_device = self.shape.devices == 1 and all(
            v is None for v in (d.data_parallel, d.fsdp, d.tensor_parallel))
        self.process_count = jax.process_count()
        self.process_index = jax.process_index()
        self.local_devices = jax.local_device_count()
        self.batch_size = config.train.batch_size  # per device
        devices = keras.distribution.list_devices()
        self.mesh = keras.distribution.DeviceMesh(
            (self.shape.data, self.shape.fsdp, self.shape.model), AXES, devices)
        self.jax_mesh = self.mesh.backend_mesh
        P = jax.sharding.PartitionSpec
        self.batch_sharding = jax.sharding.NamedSharding(self.jax_mesh, P(("data", "fsdp"), None))
        self.replicated = jax.sharding.NamedSharding(self.jax_mesh, P())

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        return self.batch_size * self.shape.devices

    @property
    def local_rows(self) -> int:
        """Rows this process reads per micro-batch."""
        return self.batch_size * self.local_devices

    @property
    def multi_process(self) -> bool:
        return self.process_count > 1

    @property
    def label(self) -> str:
        """The mesh in words, as checkpoints record it."""
        return "one device" if self.single_device else self.shape.describe()

    def describe(self, seq_len: int, accumulation: int) -> str:
        tokens = self.global_batch * seq_len * accumulation
        procs = f" in {self.process_count} processes" if self.multi_process else ""
        return (f"Mesh: {self.shape.devices} devices{procs} ({self.shape.describe()}); batch "
                f"{self.batch_size} per device, global batch {self.global_batch}, "
                f"{tokens:,} tokens per update")

    # -- placing arrays ------------------------------------------------------------------------
    def scope(self, model: ModelConfig):
        """Build the model and the optimizer inside: their variables are created sharded.

        The layouts follow ``model`` (the run's resolved shape: the vocabulary size is known only
        once the tokenizer is ready)."""
        return self.keras_distribution(model).scope()

    def keras_distribution(self, model: ModelConfig):
        """Keras' ``ModelParallel`` over the mesh with our :func:`layout_rules` as ``LayoutMap``."""
        import keras

        layout_map = keras.distribution.LayoutMap(self.mesh)
        for pattern, axes in layout_rules(self.shape, model).items():
            layout_map[pattern] = axes
        return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="data")

    def place_batch(self, local_rows):
        """This process's rows -> the global batch array, split over ``data`` × ``fsdp``."""
        import jax

        return jax.make_array_from_process_local_data(self.batch_sharding, local_rows)

    def place_rows(self, local_values):
        """This process's per-row values (``counts``) -> a global vector split as the rows are."""
        import jax

        from kerastrain.training.steps import row_sharding

        return jax.make_array_from_process_local_data(row_sharding(self), local_values)

    def state_shardings(self, state):
        """The sharding of every array of the training state: as it was created, except that an
        array made on one device (Keras' variables without a distribution) is the mesh's
        replicated array. The step returns its state typed on the mesh, so a first call given
        single-device arrays would be traced and lowered a second time at its second call."""
        import jax

        return jax.tree.map(lambda a: self.replicated if isinstance(
            a.sharding, jax.sharding.SingleDeviceSharding) else a.sharding, state)

    def place_state(self, state):
        """``state`` on :meth:`state_shardings` (on one device the same buffers, retyped)."""
        import jax

        return jax.device_put(state, self.state_shardings(state))


def make_mesh_plan(config: RunConfig) -> MeshPlan:
    """The run's :class:`MeshPlan`: one device is a mesh of one, so every run takes the same
    path (XLA compiles a one-device mesh to the same program as no mesh)."""
    return MeshPlan(config)


def measure_state_bytes(config: RunConfig) -> dict:
    """XLA's memory analysis of the compiled, partitioned train step of ``config``: bytes per
    device of its arguments (weights, optimizer state and the batch shard) and temporaries.

    Builds the model and optimizer on the mesh this process's devices allow (``config.distribution``)
    or on one device, as ``kerastrain run`` would.
    """
    import jax
    import numpy as np

    from kerastrain.model.gpt import build_model
    from kerastrain.training.optimizer import make_optimizer
    from kerastrain.training.steps import initial_state, make_steps

    plan = make_mesh_plan(config)
    with plan.scope(config.model):
        model = build_model(config.model)
        optimizer = make_optimizer(config, config.train.learning_rate, model)
    train_step, _ = make_steps(model, optimizer, plan)
    x = np.zeros((plan.global_batch, config.model.seq_len), "int32")
    counts = np.full((plan.global_batch,), config.model.seq_len, "int32")  # trained labels
    x, counts = plan.place_batch(x), plan.place_rows(counts)
    state = initial_state(model, optimizer)
    stats = train_step.lower(state, x, x, counts).compile().memory_analysis()

    return {"arguments": int(stats.argument_size_in_bytes),
            "temporaries": int(stats.temp_size_in_bytes),
            "state_per_device": sum(a.addressable_shards[0].data.nbytes
                                    for a in jax.tree.leaves(state))}
