"""Data formats (a plugin kind): how the records of a source become training examples.

A format turns a chunk of records (dicts, or plain strings from a source written for text) into
:class:`Example` s: token ids and a loss mask (which tokens are trained as targets). Each example
is one segment of a packed row: with document masking, attention stays inside it and positions
restart at its first token (:mod:`kerastrain.data.packing`).

Built-ins, registered through ``register_data_formats`` like a third party's:

* ``text``: ``--text-column`` (or a plain string), EOS appended, every token trained (today's
  pretraining);
* ``chat``: ``messages`` of ``{role, content}`` (OpenAI, with ``tool_calls`` and ``tool``
  replies; ``tools`` and ``documents`` from the record), ShareGPT's ``conversations`` of
  ``{from, value}``, or TRL's conversational ``prompt`` / ``completion`` (message lists); rendered
  with the run's chat template (:mod:`kerastrain.data.chat_template`); assistant turns trained
  (every one of a multi-turn chat; a completion's only), each with its turn end, or every token
  with ``--train-on-prompt``;
* ``prompt-completion``: ``prompt`` / ``completion``, or Alpaca's ``instruction`` / ``input`` /
  ``output``; the completion (and EOS) trained;
* ``preference``: ``chosen`` / ``rejected`` pairs (:mod:`kerastrain.data.preference_format`).

``--data-format auto`` picks the first format whose columns the first record has
(:func:`detect_format`); the ``preference`` format registers first (its module is
listed before this one), as its records may hold messages too (UltraFeedback's do).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from kerastrain.errors import ConfigError, DataError
from kerastrain.hookspecs import hookimpl


@dataclass
class Example:
    """One training example: ``ids`` and, per id, whether it is trained as a target
    (``mask``; None: every id). ``whole``: False when a long example may be cut into pieces
    (plain text) rather than truncated or dropped (``--overlong``)."""

    ids: list[int]
    mask: list[bool] | None = None
    whole: bool = True


@dataclass(frozen=True)
class FormatContext:
    """What a format may use: the run's tokenizer (None before one exists), chat template and
    options."""

    tokenizer: Any = None
    template: Any = None  # a ChatTemplate, for formats that render conversations
    text_column: str = "text"
    train_on_prompt: bool = False


@runtime_checkable
class DataFormat(Protocol):
    """A data format, registered by a plugin under ``name``."""

    name: str
    description: str
    columns: str  # the columns it reads, for messages ("messages or conversations")
    packed: bool  # document masking on by default
    needs_template: bool  # renders conversations with a chat template

    def matches(self, record, context: FormatContext) -> bool:
        """Whether ``record`` has this format's columns (for ``--data-format auto``)."""
        ...

    def text(self, record, context: FormatContext) -> str:
        """The record's whole text (the tokenizer is trained on it); bad records raise
        :class:`DataError` (one line) here, before anything is written."""
        ...

    def encode(self, records: list, context: FormatContext) -> list[Example]:
        """One :class:`Example` per record, in order."""
        ...


def _columns_of(record) -> str:
    if isinstance(record, dict):
        return ", ".join(sorted(record)) or "none"
    return f"plain {type(record).__name__}"


def describe(record, limit: int = 80) -> str:
    """A record, shortened, for an error that names it."""
    text = json.dumps(record, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def missing_columns(fmt, record, context: FormatContext, formats: dict | None = None) -> DataError:
    """A record without ``fmt``'s columns: name those found and the formats that would fit."""
    fits = [name for name, f in (formats or {}).items() if f.matches(record, context)]
    hint = f"--data-format {' or '.join(fits)} fits it" if fits else "no installed format fits it"
    return DataError(f"a record has no {fmt.columns} column for --data-format {fmt.name} "
                     f"(columns found: {_columns_of(record)}); {hint}")


def _encode_marked(tokenizer, texts: list[str], spans: list[list[tuple[int, int]]] | None):
    """Token ids of whole texts and, with ``spans``, a mask: the tokens starting inside a span.

    The whole text is tokenized at once (as ``apply_chat_template`` does), so the ids are those
    transformers gives for the same text; the mask comes from each token's character offset."""
    if spans is None:
        return [(ids, None) for ids in tokenizer.encode_batch(texts)]
    if hasattr(tokenizer, "encode_offsets"):
        out = []
        for (ids, offsets), marked in zip(tokenizer.encode_offsets(texts), spans, strict=True):
            mask = [any(a <= start < b for a, b in marked) for start, _ in offsets]
            out.append((list(ids), mask))
        return out
    # A tokenizer without offsets: encode the pieces between span edges and join them.
    out = []
    for text, marked in zip(texts, spans, strict=True):
        edges = sorted({0, len(text), *(e for span in marked for e in span)})
        pieces = [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]
        ids, mask = [], []
        encoded = tokenizer.encode_batch([text[a:b] for a, b in pieces])
        for (a, _), piece_ids in zip(pieces, encoded, strict=True):
            inside = any(s <= a < e for s, e in marked)
            ids += piece_ids
            mask += [inside] * len(piece_ids)
        out.append((ids, mask))
    return out


def _examples(encoded, context: FormatContext, where: str) -> list[Example]:
    examples = []
    for ids, mask in encoded:
        if mask is not None and not any(mask[1:]):  # the first token is never a target
            raise DataError(f"an example has no trained token ({where}); drop it from the data, "
                            "or pass --train-on-prompt")
        examples.append(Example(ids, mask))
    return examples


class TextFormat:
    name = "text"
    description = "Plain text (--text-column), every token trained"
    columns = "text"
    packed = False
    needs_template = False

    def matches(self, record, context: FormatContext) -> bool:
        return isinstance(record, str) or (isinstance(record, dict)
                                           and isinstance(record.get(context.text_column), str))

    def text(self, record, context: FormatContext) -> str:
        if isinstance(record, str):
            return record
        if not self.matches(record, context):
            raise DataError(f"a record has no text column {context.text_column!r} (columns "
                            f"found: {_columns_of(record)}); pass --text-column or --data-format")
        return record[context.text_column]

    def encode(self, records: list, context: FormatContext) -> list[Example]:
        tok = context.tokenizer
        texts = [self.text(r, context) for r in records]
        return [Example([*ids, tok.eos_id], None, whole=False) for ids in tok.encode_batch(texts)]


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function": "tool", "observation": "tool",
                  "function_call": "assistant", "model": "assistant"}


def _content(value) -> str:
    """A message's content: a string, or OpenAI's list of ``{type: text, text}`` parts."""
    if isinstance(value, list):
        return "".join(p.get("text", "") for p in value if isinstance(p, dict))
    return "" if value is None else str(value)


def _json_field(value, what: str, record):
    """A field that may come as JSON text (a Parquet or CSV ``tools`` column, OpenAI's tool-call
    ``arguments``): the object it spells; templates expect objects (``arguments | tojson``)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise DataError(f"{what} is not JSON in the record {describe(record)}") from None


def _tool_calls(calls, record) -> list:
    out = []
    for call in calls:
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            function = dict(call["function"])
            if "arguments" in function:
                function["arguments"] = _json_field(function["arguments"], "a tool call's "
                                                    "arguments", record)
            call = {**call, "function": function}
        out.append(call)
    return out


def _is_message(item) -> bool:
    """A message: an object with a role, or its JSON text (datasets hands over list items of
    differing shapes, a tool call beside plain turns, as JSON text)."""
    if isinstance(item, str):
        return item.lstrip().startswith("{") and '"role"' in item
    return isinstance(item, dict) and "role" in item


def _messages(items: list, record) -> list[dict]:
    out = []
    for item in items:
        item = _json_field(item, "a message", record)
        if not isinstance(item, dict):
            raise DataError(f"a message is not an object in the record {describe(record)}")
        out.append(item)
    return out


def is_conversational(record) -> bool:
    """TRL's conversational prompt-completion: ``prompt`` and ``completion`` message lists."""
    return isinstance(record, dict) and all(
        isinstance(record.get(k), list) and all(_is_message(m) for m in record[k])
        for k in ("prompt", "completion"))


def messages_of(record) -> list[dict]:
    """The ``[{role, content}]`` turns of an OpenAI, ShareGPT or conversational
    prompt-completion record (the prompt's, then the completion's); unknown roles refused."""
    from kerastrain.data.chat_template import ROLES

    if is_conversational(record):
        items = _messages([*record["prompt"], *record["completion"]], record)
        roles, key, who = {r: r for r in ROLES}, "content", "role"
    elif isinstance(record.get("messages"), list):
        items = _messages(record["messages"], record)
        roles, key, who = {r: r for r in ROLES}, "content", "role"
    else:
        items = _messages(record["conversations"], record)
        roles, key, who = SHAREGPT_ROLES, "value", "from"
    turns = [(m.get(who), m) for m in items]
    messages = []
    for role, turn in turns:
        if role not in roles:
            raise DataError(f"unknown role {role!r} in a conversation; roles: "
                            f"{', '.join(sorted(roles))}")
        message = {k: v for k, v in turn.items() if k not in ("from", "value", "role", "content")}
        if isinstance(message.get("tool_calls"), list):
            message["tool_calls"] = _tool_calls(message["tool_calls"], record)
        content = turn.get(key)
        # No content (a tool call's): left out, as transformers leaves out None values.
        messages.append({**message, "role": roles[role],
                         "content": None if content is None else _content(content)})
    return messages


class ChatFormat:
    name = "chat"
    description = ("Conversations: messages [{role, content}] (tool calls and tools too), "
                   "ShareGPT conversations [{from, value}] or conversational prompt/completion, "
                   "rendered with the chat template; assistant turns trained")
    columns = "messages, conversations or prompt/completion message lists"
    packed = True
    needs_template = True

    def matches(self, record, context: FormatContext) -> bool:
        return isinstance(record, dict) and (isinstance(record.get("messages"), list)
                                             or isinstance(record.get("conversations"), list)
                                             or is_conversational(record))

    def _spans(self, record, context: FormatContext):
        if not self.matches(record, context):
            raise missing_columns(self, record, context, _builtin_formats())
        messages = messages_of(record)
        tools = _json_field(record.get("tools"), "the tools", record)
        documents = _json_field(record.get("documents"), "the documents", record)
        if context.train_on_prompt:
            return context.template.render(messages, tools=tools, documents=documents), None
        # A completion's turns are trained, not the prompt's (TRL's completion-only loss).
        first = len(record["prompt"]) if is_conversational(record) else 0
        replies = [m for m in messages[first:] if m["role"] == "assistant"]
        if not replies:
            raise DataError(f"a conversation has no assistant turn, so no trained token: "
                            f"{describe(record)}; drop it from the data, or pass "
                            "--train-on-prompt")
        if not any(m.get("content") or m.get("tool_calls") for m in replies):
            raise DataError(f"a conversation's assistant turns are all empty: {describe(record)}")
        text, spans = context.template.assistant_spans(messages, tools, documents, first)
        return text, spans

    def text(self, record, context: FormatContext) -> str:
        return self._spans(record, context)[0]

    def encode(self, records: list, context: FormatContext) -> list[Example]:
        rendered = [self._spans(r, context) for r in records]
        spans = None if context.train_on_prompt else [s for _, s in rendered]
        encoded = _encode_marked(context.tokenizer, [t for t, _ in rendered], spans)
        return _examples(encoded, context, "a conversation whose assistant turns are cut off")


ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n{input}### Response:\n"


class PromptCompletionFormat:
    name = "prompt-completion"
    description = ("prompt / completion, or Alpaca's instruction / input / output; the "
                   "completion trained")
    columns = "prompt and completion (or instruction and output)"
    packed = True
    needs_template = False

    def matches(self, record, context: FormatContext) -> bool:
        return isinstance(record, dict) and not is_conversational(record) and (
            ("prompt" in record and "completion" in record)
            or ("instruction" in record and "output" in record))

    def parts(self, record, context: FormatContext) -> tuple[str, str]:
        """(prompt text, completion text) of a record."""
        if not self.matches(record, context):
            raise missing_columns(self, record, context, _builtin_formats())
        if "prompt" in record and "completion" in record:
            if any(isinstance(record[k], list) and any(isinstance(m, dict) and "role" in m
                                                       for m in record[k])
                   for k in ("prompt", "completion")):
                raise DataError(f"a record's prompt and completion must both be message lists "
                                f"(chat) or both text: {describe(record)}")
            prompt, completion = _content(record["prompt"]), _content(record["completion"])
        else:
            extra = _content(record.get("input"))
            prompt = ALPACA_PROMPT.format(instruction=_content(record["instruction"]),
                                          input=f"### Input:\n{extra}\n\n" if extra else "")
            completion = _content(record["output"])
        if not completion:
            raise DataError(f"a record's completion is empty, so no trained token: "
                            f"{describe(record)}")
        return prompt, completion

    def text(self, record, context: FormatContext) -> str:
        return "".join(self.parts(record, context))

    def encode(self, records: list, context: FormatContext) -> list[Example]:
        tok = context.tokenizer
        parts = [self.parts(r, context) for r in records]
        prompts = tok.encode_batch([p for p, _ in parts])
        completions = tok.encode_batch([c for _, c in parts])
        examples = []
        for p, c in zip(prompts, completions, strict=True):
            ids = [*p, *c, tok.eos_id]
            mask = None if context.train_on_prompt else [False] * len(p) + [True] * (len(c) + 1)
            examples.append(Example(ids, mask))
        return examples


BUILTIN_FORMATS = (ChatFormat(), PromptCompletionFormat(), TextFormat())


def _builtin_formats() -> dict:
    from kerastrain.plugins import data_formats

    return {name: reg.obj for name, reg in data_formats().items()}


@hookimpl
def register_data_formats(register):
    for fmt in BUILTIN_FORMATS:
        register(fmt)


def choose_format(name: str, first_record, context: FormatContext):
    """The format ``--data-format NAME`` selects; ``auto``: the first registered format (chat,
    prompt-completion, then text, then third parties') whose columns ``first_record`` has."""
    formats = _builtin_formats()
    if name != "auto":
        if name not in formats:
            raise ConfigError(f"unknown --data-format {name!r}; installed: "
                              f"{', '.join(formats)} (see `kerastrain plugins`)")
        fmt = formats[name]
        if first_record is not None and not fmt.matches(first_record, context):
            raise missing_columns(fmt, first_record, context, formats)
        return fmt
    if first_record is None:
        return formats["text"]
    for fmt in formats.values():
        if fmt.matches(first_record, context):
            return fmt
    raise DataError(f"no installed data format reads the first record (columns found: "
                    f"{_columns_of(first_record)}); formats: "
                    + "; ".join(f"{f.name} needs {f.columns}" for f in formats.values()))
