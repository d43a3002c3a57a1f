"""Where a run starts from: the output directory it writes, the checkpoint it resumes (if any) and
what that checkpoint's run was asked; the refusals that keep a resume honest."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kerastrain.config import RunConfig
from kerastrain.errors import CheckpointError, ConfigError
from kerastrain.model.presets import resolve_preset
from kerastrain.training.checkpoint import (
    RUN_CONFIG_FILE,
    TOKENIZER_FILE,
    newest_verified_checkpoint,
    remove_leftovers,
)

# What an output directory holds that --overwrite clears (the tokenizer is kept and reused).
RUN_ARTIFACTS = ("metrics.jsonl", "tensorboard", "final_checkpoint", "best_checkpoint")


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues (``path``; None: it starts fresh) and what the run that
    wrote it was asked (``previous``: its ``run_config.json``, when readable)."""

    path: Path | None = None
    previous: RunConfig | None = None


def find_resume_point(config: RunConfig, output_dir: Path, init_from, say) -> ResumePoint:
    """The checkpoint to continue from (``--resume-from``, else the newest complete one in
    ``output_dir`` unless ``--overwrite``), checked against this run's request."""
    path = _resume_path(config, output_dir, say)
    previous = checkpoint_request(path)
    if path is not None and init_from.source:
        refuse_unused_init_from(config, path, previous)
    if previous is not None:
        refuse_changed_accumulation(config, path, previous)
    return ResumePoint(path, previous)


def _resume_path(config: RunConfig, output_dir: Path, say) -> Path | None:
    source = config.output.resume_from
    if source:
        if "://" in source:
            from kerastrain.storage.remote import fetch_checkpoint

            say(f"Downloading checkpoint {source} ...")
            return fetch_checkpoint(source, output_dir / ".downloaded", config.cloud)
        path = Path(source)
        if not path.is_dir():
            raise CheckpointError(f"--resume-from {source}: no such checkpoint directory")
        return path
    if config.output.overwrite:
        return None
    found = newest_verified_checkpoint(output_dir, say)
    if found:
        say(f"Resuming from {found.path} (step {found.step}); pass --overwrite to start fresh")
        return found.path
    return None


def prepare_output_dir(config: RunConfig, output_dir: Path, resume: ResumePoint, init_from,
                       tokenizer_path: Path, say) -> None:
    """Process 0, before anything is trained: half-written checkpoints of a killed run deleted;
    with ``--overwrite`` the previous run's files; the tokenizer a checkpoint's weights need
    (resumed, or ``--init-from`` a kerastrain checkpoint: its ids) put in place."""
    remove_leftovers(output_dir)
    if resume.path is None and config.output.overwrite:
        clear_previous_run(output_dir)
    if resume.path is not None:
        adopt_checkpoint_tokenizer(config, resume.path, tokenizer_path, say)
    elif init_from.checkpoint is not None:
        # A kerastrain checkpoint's weights mean its tokenizer's ids: never train another one.
        adopt_checkpoint_tokenizer(config, init_from.checkpoint, tokenizer_path, say)


def adopt_checkpoint_tokenizer(config: RunConfig, checkpoint: Path, target: Path, say) -> None:
    """Take the tokenizer ``checkpoint`` was trained with (to ``target``, the run's tokenizer
    path), unless the run has one or retrains it."""
    source = checkpoint / TOKENIZER_FILE
    if source.exists() and not target.exists() and not config.tokenizer.retrain:
        shutil.copyfile(source, target)
        say(f"Tokenizer: taken from the checkpoint {checkpoint}")


def clear_previous_run(output_dir: Path) -> None:
    for name in RUN_ARTIFACTS:
        p = output_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for p in output_dir.glob("checkpoint_step_*"):
        shutil.rmtree(p, ignore_errors=True)


def truncate_metrics(output_dir: Path, step: int) -> None:
    """Drop metrics logged after the checkpoint we resume from: those steps run again.

    A line a crash left half written (the last one) is dropped too; the file is replaced whole."""
    path = output_dir / "metrics.jsonl"
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("step", 0) <= step and row.get("kind") != "summary":
            keep.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


def checkpoint_request(checkpoint: Path | None) -> RunConfig | None:
    """What the run that wrote ``checkpoint`` was asked (its ``run_config.json``), or None. A
    resumed run continues that run: this is its record, not a guess at what the user meant."""
    if checkpoint is None or not (Path(checkpoint) / RUN_CONFIG_FILE).is_file():
        return None
    try:
        return RunConfig.from_dict(json.loads((Path(checkpoint) / RUN_CONFIG_FILE).read_text()),
                                   resolve_preset)
    except (ValueError, TypeError, ConfigError):
        return None


def refuse_unused_init_from(config: RunConfig, resume: Path, previous: RunConfig | None) -> None:
    """``--init-from`` when the run resumes: honoured only if the checkpoint's run started from the
    same weights (the same command run again); otherwise refused, never silently dropped."""
    started_from = previous.train.init_from if previous is not None else None
    if config.train.init_from != started_from:
        raise ConfigError(
            f"--init-from {config.train.init_from} would be ignored: this run resumes {resume}, "
            f"which started from {started_from or 'random weights'}; pass --overwrite to start "
            "again from it, or a new --output-dir"
        )


def refuse_changed_accumulation(config: RunConfig, resume: Path, previous: RunConfig) -> None:
    """Keras' restored micro-step counter would put updates and the schedule at the wrong
    micro-steps under another k (and k=1 has no accumulators to restore): refused."""
    k, was = config.train.gradient_accumulation_steps, previous.train.gradient_accumulation_steps
    if k != was:
        raise ConfigError(f"--gradient-accumulation-steps {k} cannot resume {resume}, trained "
                          f"with {was}; pass --gradient-accumulation-steps {was}, or --overwrite")
