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
@click.option("--verify", is_flag=True,
              help="Check the written folder: its logits in transformers (needs torch) equal the "
                   "model's within 1e-4 on a probe batch (--format hf)")
def export_command(source, target, fmt, overwrite, verify):
    """Export a trained model (SOURCE: output or checkpoint directory) to another format.

    The first family that holds the model's options writes it: RMSNorm + SwiGLU + RoPE models
    become Llama (LlamaForCausalLM), LayerNorm + GELU + learned positions GPT-2 (GPT2LMHeadModel),
    the families' switches Mistral, Qwen or Gemma. LoRA checkpoints export merged.
    """
    from kerastrain.errors import ConfigError
    from kerastrain.model.export_hf import export_model

    if verify:  # refused before anything is written
        from kerastrain.model.export_verify import TOLERANCE, require_transformers_with_torch

        if fmt != "hf":
            raise ConfigError("--verify checks a Hugging Face folder in transformers; it "
                              "applies to --format hf")
        require_transformers_with_torch()
    summary = export_model(source, target, fmt, overwrite)
    click.echo(f"Exported {summary['architecture']} ({summary['format']}) to {summary['to']}: "
               + ", ".join(summary["files"]))
    if verify:
        from kerastrain.model.export_verify import verify_hf_export

        checked = verify_hf_export(source, target)
        click.echo(f"Verified: {checked['class']} (transformers {checked['transformers']}) gives "
                   f"the model's logits on {checked['probe_tokens']} probe tokens, max difference "
                   f"{checked['max_abs_diff']:.2g} (tolerance {TOLERANCE:g})")


@hookimpl
def register_commands(cli):
    cli.add_command(export_command)
