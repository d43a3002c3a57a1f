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
def serve_command(output_dir, host, port, api_key, slots, name):
    """Serve a trained model (OUTPUT_DIR or one of its checkpoints) over the OpenAI API:
    /v1/chat/completions, /v1/completions, /v1/models, /health, and a chat page at /."""
    from pathlib import Path

    from kerastrain.errors import ConfigError

    try:
        import uvicorn

        from kerastrain.serve.openai_api import Served, build_app
    except ImportError as exc:
        raise ConfigError(f"kerastrain serve needs the serve extra ({exc.name} is missing): "
                          "pip install 'kerastrain[serve]'") from exc
    from kerastrain.model.loading import chat_template_of, load
    from kerastrain.serve.engine import BatchingEngine

    template = chat_template_of(output_dir)
    model, tokenizer = load(output_dir)
    name = name or Path(output_dir).resolve().name
    served = Served(name, tokenizer, template, BatchingEngine(model, slots), api_key)
    where = "this machine only" if host in ("127.0.0.1", "localhost", "::1") else "the network"
    click.echo(f"Serving '{name}' on http://{host}:{port}/ (open to {where}; "
               f"{'API key required' if api_key else 'no API key'}); Ctrl-C stops", err=True)
    uvicorn.run(build_app(served), host=host, port=port, log_level="warning")


@hookimpl
def register_commands(cli):
    cli.add_command(serve_command)
