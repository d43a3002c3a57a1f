"""Built-in plugin adding ``kerastrain serve``: the OpenAI API and a chat page for a trained model.

Keras, the model and the web stack are imported inside the command only (plugins import fast).
"""

from __future__ import annotations

import click

from kerastrain.hookspecs import hookimpl


@click.command(name="serve")
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (the default answers this machine only)")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--api-key", envvar="KERASTRAIN_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on /v1/ (env KERASTRAIN_API_KEY)")
@click.option("--slots", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Requests decoded together (one batched step); more wait for a free slot")
@click.option("--name", default=None, help="The model name clients pass (default: the folder name)")
@click.option("--seq-len", type=click.IntRange(2), default=2048, show_default=True,
              help="Context length for a Hugging Face / keras-hub folder (a run has its own)")
def serve_command(output_dir, host, port, api_key, slots, name, seq_len):
    """Serve a model over the OpenAI API: /v1/chat/completions, /v1/completions, /v1/models,
    /health, and a chat page at /. OUTPUT_DIR: a run's output directory, one of its checkpoints,
    or a Hugging Face / keras-hub model folder."""
    from pathlib import Path

    from kerastrain.errors import ConfigError

    try:
        import uvicorn

        from kerastrain.serve.openai_api import Served, build_app
    except ImportError as exc:
        raise ConfigError(f"kerastrain serve needs the serve extra ({exc.name} is missing): "
                          "pip install 'kerastrain[serve]'") from exc
    from kerastrain.model.loading import load_for_inference
    from kerastrain.serve.engine import BatchingEngine

    model, tokenizer, template = load_for_inference(output_dir, seq_len)
    name = name or Path(output_dir).resolve().name
    served = Served(name, tokenizer, template, BatchingEngine(model, slots), api_key)
    where = "this machine only" if host in ("127.0.0.1", "localhost", "::1") else "the network"
    click.echo(f"Serving '{name}' on http://{host}:{port}/ (open to {where}; "
               f"{'API key required' if api_key else 'no API key'}); Ctrl-C stops", err=True)
    uvicorn.run(build_app(served), host=host, port=port, log_level="warning")


@hookimpl
def register_commands(cli):
    cli.add_command(serve_command)
