"""Built-in plugin adding ``kerastrain chat OUTPUT_DIR``: a conversation in the terminal.

Each line typed is a user message; the reply streams as it is sampled (KV cache, the model's
chat template, the history of the conversation so far). ``/reset`` forgets the history,
``/exit`` (or end of input) ends the chat. Keras is imported inside the command only.
"""

from __future__ import annotations

import click

from kerastrain.cli.model_commands import sampler_for, sampling_options
from kerastrain.hookspecs import hookimpl

COMMANDS = {"/reset": "forget the conversation so far", "/exit": "end the chat"}


@click.command(name="chat")
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--system", default=None, help="A system message that opens the conversation")
@sampling_options
def chat_command(output_dir, system, max_new_tokens, temperature, top_k, top_p, seed):
    """Talk with a model fine-tuned on chat data (OUTPUT_DIR or one of its checkpoints)."""
    from kerastrain.model.chat import Conversation
    from kerastrain.model.loading import chat_template_of, load

    sampler = sampler_for(max_new_tokens, temperature, top_k, top_p, seed)
    template = chat_template_of(output_dir)
    model, tokenizer = load(output_dir)
    conversation = Conversation(model, tokenizer, template, sampler,
                                max_new_tokens=max_new_tokens, system=system)
    click.echo("Type a message; " + ", ".join(f"{c}: {w}" for c, w in COMMANDS.items()), err=True)
    import sys

    stdin = sys.stdin  # click's test runner swaps it too
    while True:
        click.echo("> ", nl=False, err=True)
        line = stdin.readline()
        if not line or line.strip() == "/exit":
            return
        text = line.rstrip("\n")
        if text.strip() == "/reset":
            conversation.reset()
            click.echo("(conversation reset)", err=True)
            continue
        if not text.strip():
            continue
        for piece in conversation.reply(text):
            click.echo(piece, nl=False)
        click.echo()


@hookimpl
def register_commands(cli):
    cli.add_command(chat_command)
