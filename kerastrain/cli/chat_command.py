"""Built-in plugin adding ``kerastrain chat OUTPUT_DIR``: a conversation in the terminal.

Each line typed is a user message; the reply streams as it is sampled (KV cache, the model's
chat template, the history of the conversation so far). ``/reset`` forgets the history,
``/exit`` (or end of input) ends the chat. With ``--tools FILE`` (a JSON list of OpenAI function
schemas) the template lists the tools; each tool call a reply makes is printed after it on its
own line, labelled ``[tool call]``, and ``/tool RESULT`` answers the last one.
Keras is imported inside the command only.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from kerastrain.cli.model_commands import sampler_for, sampling_options
from kerastrain.hookspecs import hookimpl

COMMANDS = {"/reset": "forget the conversation so far", "/tool RESULT": "answer the last tool call",
            "/exit": "end the chat"}
TOOL_LABEL = "[tool call]"


def read_tools(path: str | None) -> list | None:
    """``--tools FILE``: a JSON list of OpenAI function schemas (or ``{"tools": [...]}``)."""
    from kerastrain.errors import ConfigError

    if path is None:
        return None
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"--tools {path} is not valid JSON: {exc}") from None
    found = found.get("tools") if isinstance(found, dict) else found
    if not isinstance(found, list) or not all(isinstance(t, dict) for t in found):
        raise ConfigError(f"--tools {path}: expected a JSON list of function schemas "
                          '([{"type": "function", "function": {"name": ...}}])')
    return found


@click.command(name="chat")
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--system", default=None, help="A system message that opens the conversation")
@click.option("--tools", "tools_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A JSON file listing the tools (OpenAI function schemas) the template shows")
@sampling_options
def chat_command(output_dir, system, tools_file, max_new_tokens, temperature, top_k, top_p, seed):
    """Talk with a model fine-tuned on chat data (OUTPUT_DIR or one of its checkpoints)."""
    from kerastrain.model.chat import Conversation
    from kerastrain.model.loading import chat_template_of, load

    tools = read_tools(tools_file)
    sampler = sampler_for(max_new_tokens, temperature, top_k, top_p, seed)
    template = chat_template_of(output_dir)
    model, tokenizer = load(output_dir)
    conversation = Conversation(model, tokenizer, template, sampler,
                                max_new_tokens=max_new_tokens, system=system, tools=tools)
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
        role = "user"
        if text.split(maxsplit=1)[0] == "/tool":
            if not conversation.tool_calls:
                click.echo("(no tool call to answer)", err=True)
                continue
            role, text = "tool", text[len("/tool"):].strip()
        for piece in conversation.reply(text, role=role):
            click.echo(piece, nl=False)
        click.echo()
        for call in conversation.tool_calls:
            click.echo(f"{TOOL_LABEL} {call}")


@hookimpl
def register_commands(cli):
    cli.add_command(chat_command)
