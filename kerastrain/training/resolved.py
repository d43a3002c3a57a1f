"""What a run resolves from what the user asked: computed once, frozen, written and printed.

:class:`kerastrain.config.RunConfig` is the request. A run settles, once, the values that only the
data, a model folder or the machine can give: the vocabulary the tokenizer reached, the shape an
``--init-from`` folder has, the mesh, the number of updates. They live here, and nowhere else:
``OUTPUT_DIR/resolved_run.json`` beside ``run_config.json``, and every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from kerastrain.config import ModelConfig

RESOLVED_FILE = "resolved_run.json"


@dataclass(frozen=True)
class ResolvedRun:
    """The values a run uses that its request does not fix by itself."""

    model: ModelConfig  # vocabulary from the tokenizer; shape from --init-from's folder, if any
    tokenizer_path: str
    total_steps: int  # optimizer updates
    warmup_steps: int
    steps_note: str  # how total_steps was found
    devices: int = 1
    processes: int = 1
    mesh: dict | None = None  # axis sizes (data, fsdp, model); None: one device, none asked
    pretrained: str | None = None  # the --init-from folder's architecture, when it has one
    global_batch: int = 1  # rows of one micro-batch over all devices
    tokens_per_update: int = 0  # global batch x seq_len x accumulation

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def describe(self, preset: str | None, parameters: int) -> str:
        """The start-up line: what this run trains, as resolved."""
        m = self.model
        where = f" from {self.pretrained}" if self.pretrained else ""
        return (f"Model: {parameters:,} parameters ({preset or 'custom'}{where}), vocab "
                f"{m.vocab_size}, seq_len {m.seq_len}; training for {self.steps_note}, warm-up "
                f"{self.warmup_steps}; {self.tokens_per_update:,} tokens per update")


def resolve(config, *, model: ModelConfig, tokenizer_path: Path, total_steps: int,
            warmup_steps: int, steps_note: str, mesh_plan, processes: int = 1,
            pretrained: str | None = None) -> ResolvedRun:
    """The frozen record of a run (see the module docstring)."""
    shape = mesh_plan.shape
    global_batch = config.train.batch_size * shape.devices  # --batch-size is per device
    return ResolvedRun(
        model=model, tokenizer_path=str(tokenizer_path), total_steps=total_steps,
        warmup_steps=warmup_steps, steps_note=steps_note,
        devices=shape.devices, processes=processes,
        mesh=None if mesh_plan.single_device else dataclasses.asdict(shape),
        pretrained=pretrained, global_batch=global_batch,
        tokens_per_update=global_batch * model.seq_len * config.train.gradient_accumulation_steps,
    )


def write_run_records(output_dir: Path, config, resolved: ResolvedRun, chat_template=None
                      ) -> None:
    """What was asked (``run_config.json``), what it resolved to (``resolved_run.json``,
    ``model_config.json``) and the chat template data was rendered with (export and ``kerastrain
    chat`` read it)."""
    output_dir = Path(output_dir)
    config.save(output_dir / "run_config.json")
    resolved.save(output_dir / RESOLVED_FILE)
    resolved.model.save(output_dir / "model_config.json")
    if chat_template is not None:
        from kerastrain.data.chat_template import TEMPLATE_FILE

        chat_template.save(output_dir / TEMPLATE_FILE)


def recorded_warmup(checkpoint: Path | None) -> int | None:
    """The warm-up the run that wrote ``checkpoint`` resolved (its record), or None: a resumed
    run keeps it (:func:`kerastrain.training.optimizer.make_schedule`)."""
    path = Path(checkpoint) / RESOLVED_FILE if checkpoint is not None else None
    if path is None or not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text())["warmup_steps"])
    except (ValueError, KeyError, TypeError):
        return None
