"""Built-in plugin adding ``kerastrain presets``, ``generate`` and ``plan`` to the CLI.

Keras and JAX are imported inside the command functions only, so ``kerastrain --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from kerastrain.hookspecs import hookimpl


def preset_rows(batch_size: int = 8) -> list[dict]:
    """One row per registered preset: shape, exact parameters, estimated training memory."""
    from kerastrain.config import ModelConfig, RunConfig, TrainConfig
    from kerastrain.model.presets import available_presets, count_parameters, normalize_fields
    from kerastrain.training.planner import estimate_training_memory

    rows = []
    for name, reg in available_presets().items():
        cfg = ModelConfig(**normalize_fields(reg.obj))
        run = RunConfig(model=cfg, train=TrainConfig(batch_size=batch_size))
        rows.append(
            {
                "name": name,
                "layers": cfg.num_layers,
                "d_model": cfg.d_model,
                "heads": cfg.num_heads,
                "d_ff": cfg.d_ff,
                "seq_len": cfg.seq_len,
                "parameters": count_parameters(cfg),
                "training_memory_bytes": estimate_training_memory(run),
                "batch_size": batch_size,
                "description": reg.extra.get("description", ""),
                "plugin": reg.plugin,
            }
        )
    return rows


@click.command(name="presets")
@click.option("--batch-size", type=int, default=8, show_default=True,
              help="Batch size for the memory estimate")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
def presets_command(batch_size, as_json):
    """List model presets with exact parameter counts (vocab 16000) and training memory."""
    from kerastrain.training.planner import format_bytes

    rows = preset_rows(batch_size)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from kerastrain.cli.tables import table_console

    console = table_console()
    wide = console.width >= 130  # descriptions only where they fit without wrapping every cell
    table = Table(title=f"Model presets (vocab 16000; training memory at batch {batch_size}, "
                        "seq_len, float32)")
    columns = ["preset", "layers", "d_model", "heads", "d_ff", "seq_len", "parameters", "memory"]
    for column in columns + (["description"] if wide else []):
        left = column in ("preset", "description")
        table.add_column(column, justify="left" if left else "right", no_wrap=column != "description")
    for r in rows:
        cells = [r["name"], str(r["layers"]), str(r["d_model"]), str(r["heads"]), str(r["d_ff"]),
                 str(r["seq_len"]), f"{r['parameters']:,}", format_bytes(r["training_memory_bytes"])]
        table.add_row(*cells, *([r["description"]] if wide else []))
    console.print(table)


def sampling_options(command):
    """The sampling options ``generate`` and ``chat`` share (declared once, here)."""
    for option in reversed((
        click.option("--max-new-tokens", type=int, default=50, show_default=True),
        click.option("--temperature", type=float, default=1.0, show_default=True,
                     help="Sampling temperature; 0 means greedy"),
        click.option("--top-k", type=int, default=None, help="Sample from the k most likely tokens"),
        click.option("--top-p", type=float, default=None, help="Nucleus sampling probability mass"),
        click.option("--seed", type=int, default=None,
                     help="Random seed: the same seed gives the same text"),
    )):
        command = option(command)
    return command


def sampler_for(max_new_tokens, temperature, top_k, top_p, seed):
    """The :class:`~kerastrain.model.decoder.Sampling` of the sampling options; bad options fail
    before any loading."""
    from kerastrain.errors import ConfigError

    if max_new_tokens < 1:
        raise ConfigError("--max-new-tokens must be at least 1")
    from kerastrain.model.decoder import make_sampler

    return make_sampler(temperature, top_k, top_p, seed)


@click.command(name="generate")
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--prompt", "prompts", multiple=True, help="Text to continue (repeat for several)")
@click.option("--prompts-file", type=click.Path(exists=True, dir_okay=False),
              help="A file of prompts, one per line")
@click.option("--chat", is_flag=True,
              help="Each prompt is a user message: reply as the assistant, through the model's "
                   "chat template (streamed)")
@sampling_options
def generate_command(output_dir, prompts, prompts_file, chat, max_new_tokens, temperature, top_k,
                     top_p, seed):
    """Generate text with a trained model from OUTPUT_DIR (or one of its checkpoints).

    Several prompts share one compiled function (per length bucket): only the first pays the
    compile. For each, the time until its text is ready (time to first token: generation is not
    streamed) and tokens/s go to stderr. With --chat each prompt is answered on its own (no
    shared history; `kerastrain chat` keeps one) and the reply streams.
    """
    from kerastrain.model.decoder import generate_text
    from kerastrain.model.loading import chat_template_of, load

    sampler = sampler_for(max_new_tokens, temperature, top_k, top_p, seed)
    prompts = list(prompts)
    if prompts_file:
        prompts += [line for line in Path(prompts_file).read_text().splitlines() if line.strip()]
    if chat and not prompts:
        from kerastrain.errors import ConfigError

        raise ConfigError("generate --chat needs a message: pass --prompt TEXT")
    template = chat_template_of(output_dir) if chat else None
    model, tokenizer = load(output_dir)
    if chat:
        from kerastrain.model.chat import Conversation

        conversation = Conversation(model, tokenizer, template, sampler,
                                    max_new_tokens=max_new_tokens)
        for prompt in prompts:
            conversation.reset()
            for piece in conversation.reply(prompt):
                click.echo(piece, nl=False)
            click.echo()
        return
    for i, prompt in enumerate(prompts or [""]):
        stats: dict = {}
        click.echo(generate_text(model, tokenizer, prompt, max_new_tokens, sampler=sampler,
                                 stats=stats))
        click.echo(f"[prompt {i + 1}: {stats['new_tokens']} tokens, time to first token "
                   f"{stats['seconds']:.2f} s, {stats['tokens_per_sec']:.1f} tokens/s"
                   + (", compile included]" if i == 0 else "]"), err=True)


def _plan_command():
    from kerastrain.cli.options import with_run_options

    @click.command(name="plan")
    @click.option("--memory-gb", type=float, default=None,
                  help="Device memory (GiB): also report the largest batch that fits")
    @click.option("--num-devices", type=int, default=1, show_default=True,
                  help="Data-parallel devices, each with --batch-size rows")
    @click.option("--measure", is_flag=True,
                  help="Also compile one training step here and report XLA's measured memory")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON")
    @with_run_options
    def plan(config, memory_gb, num_devices, measure, as_json):
        """Estimate training memory per device for the options `kerastrain run` would get."""
        from kerastrain.training.planner import (
            GIB,
            breakdown_lines,
            format_bytes,
            largest_batch,
            measure_training_memory,
            plan_memory,
        )

        if num_devices < 1:
            raise click.BadParameter("must be at least 1", param_hint="--num-devices")
        d = config.distribution
        if any(v is not None for v in (d.data_parallel, d.fsdp, d.tensor_parallel)):
            from kerastrain.training.mesh_report import report_mesh_plan

            return report_mesh_plan(config, memory_gb, as_json)
        if config.train.init_from:  # a pretrained folder's shape, as `run --init-from` takes it
            from kerastrain.model.hf_import import is_pretrained_folder, open_pretrained

            if is_pretrained_folder(config.train.init_from):
                m = config.model
                shape = open_pretrained(config.train.init_from, m.seq_len).config
                config = config.replace(model=shape.replace(
                    dropout_rate=m.dropout_rate, use_lora=m.use_lora, lora_rank=m.lora_rank,
                    mixed_precision=m.mixed_precision, remat=m.remat))
        plan_ = plan_memory(config)
        result = {"preset": config.preset, "model": config.model.to_dict(), **plan_.as_dict()}
        if memory_gb is not None:
            result["memory_bytes"] = int(memory_gb * GIB)
            result["largest_batch"] = largest_batch(config, int(memory_gb * GIB))
        result["global_batch"] = config.train.batch_size * num_devices
        if measure:
            result["measured"] = measure_training_memory(config)
        from kerastrain.training.optimizer import describe_groups, planned_groups

        groups = planned_groups(config)
        if groups is not None:
            result["optimizer_groups"] = groups
        if as_json:
            click.echo(json.dumps(result, indent=2))
            return
        m = config.model
        click.echo(
            f"Model: {config.preset or 'custom'}, {plan_.parameters:,} parameters "
            f"({plan_.trainable_parameters:,} trainable), {m.num_layers} layers, d_model "
            f"{m.d_model}, seq_len {m.seq_len}, {'bfloat16' if m.mixed_precision else 'float32'}"
        )
        click.echo(f"Batch {config.train.batch_size} per device on {num_devices} device(s): "
                   f"global batch {result['global_batch']}")
        click.echo("\n".join(breakdown_lines(plan_)))
        if groups is not None:
            click.echo(describe_groups(groups))
        if memory_gb is not None:
            fits = "fits" if plan_.total <= result["memory_bytes"] else "does NOT fit"
            click.echo(f"In {memory_gb:g} GiB: this batch {fits}; largest batch per device that fits: "
                       f"{result['largest_batch']}")
        if measure:
            peak = result["measured"]["peak"]
            click.echo(f"Measured (XLA, this machine): {format_bytes(peak)}; estimate error "
                       f"{(plan_.total / peak - 1) * 100:+.1f}%")

    return plan


@hookimpl
def register_commands(cli):
    cli.add_command(presets_command)
    cli.add_command(generate_command)
    cli.add_command(_plan_command())
