"""Tool calls in a model's reply, read back from the markup its chat template writes them in.

A model fine-tuned on tool-calling conversations writes a call as its template renders an
assistant message's ``tool_calls``; :func:`parse_tool_calls` reads the three forms the families'
templates use (``tests/data/templates``):

* ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per call: Qwen 2.5/3,
  Hermes-style ChatML templates, SmolLM3;
* ``[TOOL_CALLS] [{"name": ..., "arguments": {...}, "id": ...}, ...]``: Mistral;
* a reply that is one JSON object ``{"name": ..., "parameters": {...}}``, after an optional
  ``<|python_tag|>``: Llama 3.1 to 3.3.

``kerastrain chat`` prints each call it reads, labelled, after the streamed reply.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
MISTRAL = re.compile(r"\[TOOL_CALLS\]\s*(\[.*\])", re.DOTALL)
PYTHON_TAG = "<|python_tag|>"


@dataclass(frozen=True)
class ToolCall:
    """One call: the function's name, its arguments (an object, or the text the model wrote
    when that is not JSON) and the call's id where the markup carries one (Mistral's)."""

    name: str
    arguments: dict | str
    id: str | None = None

    def __str__(self) -> str:
        arguments = self.arguments if isinstance(self.arguments, str) else json.dumps(
            self.arguments, ensure_ascii=False)
        return f"{self.name}({arguments})"


def _call(found) -> ToolCall | None:
    """A call from a decoded JSON value: ``{"name", "arguments" | "parameters"}``, or
    OpenAI's ``{"function": {...}}``; None for anything else."""
    if not isinstance(found, dict):
        return None
    if isinstance(found.get("function"), dict):
        found = {**found["function"], "id": found.get("id")}
    name = found.get("name")
    if not isinstance(name, str) or not name:
        return None
    arguments = found.get("arguments", found.get("parameters", {}))
    if isinstance(arguments, str):  # OpenAI's JSON-string arguments
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    call_id = found.get("id")
    return ToolCall(name, arguments, call_id if isinstance(call_id, str) else None)


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """(the reply's text outside its tool calls, stripped; the calls in the order written).
    Markup whose JSON does not parse stays in the text: it is not a call."""
    calls: list[ToolCall] = []

    def tagged(match):
        call = _call(_json(match.group(1)))
        if call is None:
            return match.group(0)
        calls.append(call)
        return ""

    rest = TAGGED.sub(tagged, text)
    mistral = MISTRAL.search(rest)
    if mistral:
        found = _json(mistral.group(1))
        parsed = [_call(c) for c in found] if isinstance(found, list) else [None]
        if parsed and None not in parsed:
            calls += parsed
            rest = rest[: mistral.start()] + rest[mistral.end():]
    stripped = rest.strip()
    if not calls:
        bare = stripped.removeprefix(PYTHON_TAG).strip()
        call = _call(_json(bare)) if bare.startswith("{") else None
        if call is not None:
            return "", [call]
    return stripped, calls
