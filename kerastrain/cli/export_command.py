"""Built-in plugin adding ``kerastrain export`` (a Hugging Face folder or a keras-hub preset).

Keras and keras-hub are imported inside the command only, so ``kerastrain --help`` stays fast.
"""

from __future__ import annotations

import click

from kerastrain.hookspecs import hookimpl


@click.command(name="export")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--to", "target", required=True, type=click.Path(), help="Directory to write")
@click.option("--format", "fmt", type=click.Choice(["hf", "keras-hub"]), default="hf",
              show_default=True,
              help="hf: config.json + model.safetensors + tokenizer (transformers, vLLM); "
                   "keras-hub: a preset folder for keras_hub.models.CausalLM.from_preset")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --to directory")
def export_command(source, target, fmt, overwrite):
    """Export a trained model (SOURCE: output or checkpoint directory) to another format.

    RMSNorm + SwiGLU + RoPE models become Llama (LlamaForCausalLM); LayerNorm + GELU + learned
    positions become GPT-2 (GPT2LMHeadModel). LoRA checkpoints export merged.
    """
    from kerastrain.model.export_hf import export_model

    summary = export_model(source, target, fmt, overwrite)
    click.echo(f"Exported {summary['architecture']} ({summary['format']}) to {summary['to']}: "
               + ", ".join(summary["files"]))


@hookimpl
def register_commands(cli):
    cli.add_command(export_command)
