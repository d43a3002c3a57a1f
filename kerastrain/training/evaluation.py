"""``kerastrain eval``: score a checkpoint on a dataset without training.

The data is resolved from the run's own ``run_config.json`` with only the options given to eval
changed, and read by the run's validation pipeline (:mod:`kerastrain.data.run_pipelines`): the
same format, template, masks, packing and truncation, in constant memory. Without options, the
run's validation data is scored exactly as the run validated it (its ``val_loss`` and
``val_tokens``, a mixture's too).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from kerastrain.config import RunConfig
from kerastrain.errors import ConfigError


@dataclass
class EvalRequest:
    """What to score: a checkpoint and, optionally, options that differ from its run's (a
    dataset other than its validation data, another split...). ``options``: values of the run's
    own options by ``section.name`` (``data.dataset_id``, ``train.batch_size``); None: the run's."""

    checkpoint: str
    options: dict = field(default_factory=dict)
    max_examples: int | None = None


def run_config_of(checkpoint: Path) -> RunConfig | None:
    """The configuration of the run that wrote ``checkpoint`` (its own copy first)."""
    from kerastrain.model.loading import _find

    output_dir, ckpt = _find(checkpoint)
    for candidate in (ckpt / "run_config.json", output_dir / "run_config.json"):
        if candidate.is_file():
            from kerastrain.model.presets import resolve_preset

            return RunConfig.from_dict(json.loads(candidate.read_text()), resolve_preset)
    return None


def eval_config(request: EvalRequest, run: RunConfig | None) -> tuple[RunConfig, str | None]:
    """The run's configuration with the options given to eval, checked as ``run`` checks them,
    and the split to score (None: the run's validation data, exactly as it validated)."""
    given = {k: v for k, v in request.options.items() if v is not None and v != ()}
    ids = given.get("data.dataset_id")
    if isinstance(ids, str):
        given["data.dataset_id"] = ids = [ids]
    if ids is not None and len(ids) > 1:
        raise ConfigError("eval scores one dataset at a time: pass one --dataset-id")
    if run is None:
        if not ids:
            raise ConfigError(f"{request.checkpoint} has no run_config.json to find its run's "
                              "validation data; pass --dataset-id (and --split)")
        run = RunConfig()
    sections = {}
    for key, value in given.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    if ids:  # another dataset: none of the run's mixture
        sections["data"].update(datasets=[], mixture_weights=[])
    if request.max_examples:
        sections.setdefault("data", {})["max_val_examples"] = request.max_examples
    config = run.replace(**{name: dataclasses.replace(getattr(run, name), **values)
                            for name, values in sections.items()})
    config.validate()
    split = given.get("data.split")
    if ids and split is None:
        split = "validation"
    if split is None:
        d = config.data
        if d.val_split is None and d.dataset_id and not d.datasets:
            raise ConfigError("the run that made this checkpoint had no validation split; pass "
                              "--split (e.g. --split train) or --dataset-id")
    elif len(config.data.dataset_id) > 1 or config.data.datasets:
        raise ConfigError("the run trained on a mixture of datasets; eval scores its validation "
                          "data, or pass --dataset-id (and --split) to score one dataset")
    return config, split


def evaluate_checkpoint(request: EvalRequest, progress=None) -> dict:
    """Loss (mean next-token cross-entropy), perplexity and token count on the requested data,
    read as the run read its validation data (:mod:`kerastrain.data.run_pipelines`).

    ``progress(tokens)`` is called after every batch when given."""
    import jax

    from kerastrain.data.chat_template import TEMPLATE_FILE
    from kerastrain.data.preparation import open_data
    from kerastrain.data.run_pipelines import validation_pipeline
    from kerastrain.model.loading import _find, load, read_model_config
    from kerastrain.training.loss import chunked_eval_loss

    checkpoint = Path(request.checkpoint)
    config, split = eval_config(request, run_config_of(checkpoint))
    output_dir, _ = _find(checkpoint)
    if config.data.chat_template is None and (output_dir / TEMPLATE_FILE).is_file():
        # The template the run rendered its conversations with (from a model folder, say).
        config = config.replace(data=dataclasses.replace(
            config.data, chat_template=str(output_dir / TEMPLATE_FILE)))
    model, tokenizer = load(checkpoint)
    quiet = lambda _: None  # noqa: E731
    if split is None:  # the run's validation data, as the run opened it (a mixture's too)
        documents, plan = (lambda d: (d.val, d.plan))(open_data(config, None, quiet))
        if documents is None:
            raise ConfigError("the run that made this checkpoint had no validation split; pass "
                              "--split (e.g. --split train) or --dataset-id")
    else:  # the split asked for, opened as the run opened its training split
        data = open_data(config.replace(data=dataclasses.replace(
            config.data, split=split, val_split=None)), None, quiet)
        documents, plan = data.train, data.plan
    seq_len = read_model_config(*_find(checkpoint)).seq_len
    pipeline = validation_pipeline(config, seq_len, documents, tokenizer, plan)

    from kerastrain.training.objectives import choose_objective

    objective = choose_objective(config.train.objective)
    if objective.pairs:  # preference pairs: the objective's loss and TRL's metrics
        return {"checkpoint": str(checkpoint), "dataset": ", ".join(config.data.dataset_id),
                "split": split or config.data.val_split or "validation", "seq_len": seq_len,
                **score_pairs(config, objective, model, pipeline, seq_len, progress)}

    # The in-run validation's very loss: output projection and cross-entropy in chunks, so eval
    # never holds the whole batch's logits (training's memory, not more).
    def score(trainable, non_trainable, x, y, segments):
        return chunked_eval_loss(model, trainable, non_trainable, x, y, segment_ids=segments)

    score = jax.jit(score)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    total, tokens, batches = 0.0, 0, 0
    for batch in pipeline:
        s, n = score(trainable, non_trainable, batch.inputs, batch.labels, batch.segments)
        total += float(s)
        tokens += int(n)
        batches += 1
        if progress is not None:
            progress(tokens)
    if tokens == 0:
        raise ConfigError(f"split {split!r} gave no complete window of {seq_len + 1} tokens to "
                          "score; pass more data (--max-examples) or another --split")
    loss = total / tokens
    return {
        "checkpoint": str(checkpoint),
        "dataset": ", ".join(config.data.dataset_id) or (
            "a mixture" if config.data.datasets else "builtin"),
        "split": split or config.data.val_split or "validation",
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "tokens": tokens,
        "batches": batches,
        "seq_len": seq_len,
    }


def score_pairs(config: RunConfig, objective, model, pipeline, seq_len: int, progress=None
                ) -> dict:
    """A preference run's checkpoint on preference pairs: its objective's loss and TRL's metrics,
    as its validation scored them. DPO's reference is the run's ``--init-from`` model, loaded
    beside it (a LoRA run's checkpoint is loaded merged, so its base is that model too)."""
    import jax

    from kerastrain.training.preference_loss import eval_logs, make_pair_eval_step

    frozen = None
    if objective.reference:
        if not config.train.init_from:
            raise ConfigError(f"--objective {objective.name} scores against the model the run "
                              "started from, and the run had no --init-from")
        from kerastrain.model.loading import load_for_inference

        reference = load_for_inference(config.train.init_from, seq_len)[0]
        frozen = [v.value for v in reference.trainable_variables]
        if [tuple(v.shape) for v in frozen] != [tuple(v.shape) for v in
                                                 model.trainable_variables]:
            raise ConfigError(f"the run's --init-from {config.train.init_from} no longer has "
                              "the checkpoint's shape; it cannot be the reference")
    step = jax.jit(make_pair_eval_step(model, objective, config.train))
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    total, batches = 0, 0
    for batch in pipeline:
        total = total + jax.device_get(step(trainable, non_trainable, batch.inputs, batch.labels,
                                            batch.segments, frozen))
        batches += 1
        if progress is not None:
            progress(int(total[0]))
    logs = eval_logs(total, objective) if batches else None
    if logs is None:
        raise ConfigError("the split gave no preference pair to score; pass more data or "
                          "another --split")
    return {k.removeprefix("val_"): v for k, v in logs.items()} | {"batches": batches}
