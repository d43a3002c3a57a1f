"""Chat templates: Jinja templates that turn a conversation into the text a model is trained on.

A template comes from a model folder's ``tokenizer_config.json`` (``chat_template``), from a file
(``--chat-template FILE``), or, for a model trained from scratch, the built-in ChatML template
(:data:`CHATML`), whose markers are added to the trained tokenizer as special tokens.

Templates are rendered as transformers' ``apply_chat_template`` renders them
(``transformers/utils/chat_template_utils.py``): jinja2's ``ImmutableSandboxedEnvironment`` with
``trim_blocks``, ``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception``,
``strftime_now`` and a ``tojson`` that keeps non-ASCII text; the special tokens of the tokenizer
config (``bos_token``, ``eos_token``...) are template variables. So transformers, given the same
template, renders the same text, and tokenizing that text without special tokens (as
``apply_chat_template`` does) gives the ids trained on.

Every template, whatever its origin, renders with the run tokenizer's special tokens
(:func:`special_tokens_of`, or an ``--init-from`` folder's ``tokenizer_config.json``), the
record's ``tools`` and ``documents``, and ``--chat-template-kwargs``; export writes the same
tokens into ``tokenizer_config.json``, so transformers on the exported folder renders the text
trained on (tested with transformers itself).

Which characters are trained: each assistant turn, from where the conversation rendered up to
that turn with the generation prompt stops agreeing with the whole conversation's text (backed up
to a line or marker edge when they part mid-word: Qwen 3's ``<think>`` and a ``<tool_call>``), to the
end of the template's turn-end marker (:attr:`ChatTemplate.turn_end`: ``<|im_end|>``,
``<|eot_id|>``, ``<end_of_turn>``, the EOS...) that follows it: the marker is what generation
stops at, so it is trained and nothing after it (ChatML's newline) is. Turns are trained as the
whole conversation renders them: Qwen 3 drops the reasoning of turns before the last user
message, so those turns train their answers and the last turn its reasoning too, as the model
sees them when it continues such a conversation. transformers' ``{% generation %}`` tags are
accepted (rendered as plain text) but not needed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property, lru_cache
from pathlib import Path

from kerastrain.errors import ConfigError, DataError

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_SPECIAL_TOKENS = (IM_START, IM_END)
# The template a run used and the special tokens it refers to, in its output directory and every
# checkpoint: ``{"chat_template": ..., "bos_token": ...}``, the form of transformers' own
# ``chat_template.json``.
TEMPLATE_FILE = "chat_template.json"
JINJA_FILE = "chat_template.jinja"  # transformers' other spelling of a folder's template
ROLES = ("system", "user", "assistant", "tool")
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")
# A turn-end marker: an added token's spelling (<|im_end|>, <|eot_id|>, <｜end▁of▁sentence｜>,
# <end_of_turn>, </s>); found right after an assistant reply, before whatever follows it.
MARKER = re.compile(r"<[|｜][^<>\s]*?[|｜]>|</?[A-Za-z_][\w.-]*>")
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # transformers' aliases
PROBE = "kerastrain probe reply"


@lru_cache(maxsize=16)
def _compile(source: str):
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        """transformers' ``{% generation %}...{% endgeneration %}``: rendered as its body (the
        trained spans are found by rendering prefixes, see the module docstring)."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(
                lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = dict
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise ConfigError(f"the chat template does not parse: {exc.message} (line {exc.lineno})"
                          ) from None


def _as_template_messages(messages: list[dict]) -> list[dict]:
    """What transformers hands a template: keys whose value is None dropped, reasoning under
    each of its names (``_normalize_chat_messages``, ``_alias_reasoning_fields``)."""
    out = []
    for message in messages:
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in REASONING_FIELDS if k in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template, the special tokens it may refer to (``bos_token``...) and the
    extra variables of ``--chat-template-kwargs`` (``enable_thinking``...)."""

    source: str
    origin: str = "built-in ChatML"  # where it came from, for messages
    variables: dict = field(default_factory=dict)  # bos_token, eos_token, ... as strings
    kwargs: dict = field(default_factory=dict)  # --chat-template-kwargs, typed from JSON

    @property
    def is_chatml(self) -> bool:
        return self.source == CHATML

    def with_special_tokens(self, tokens: dict) -> ChatTemplate:
        """This template rendering with ``tokens`` (the run tokenizer's) as its special tokens:
        they replace those of the folder or file it came from."""
        return replace(self, variables={k: v for k, v in tokens.items() if v is not None})

    def render(self, messages: list[dict], add_generation_prompt: bool = False,
               tools: list | None = None, documents: list | None = None) -> str:
        """The text of ``messages`` (``[{role, content}, ...]``), as transformers'
        ``apply_chat_template(messages, tools=, documents=, **kwargs)`` renders it."""
        import jinja2

        template = _compile(self.source)
        variables = {**{k: v for k, v in self.variables.items() if v is not None}, **self.kwargs}
        try:
            return template.render(messages=_as_template_messages(messages), tools=tools,
                                   documents=documents,
                                   add_generation_prompt=add_generation_prompt, **variables)
        except (jinja2.exceptions.TemplateError, TypeError, ValueError, KeyError,
                AttributeError, IndexError) as exc:  # a template's own error or a data mismatch
            raise DataError(f"the chat template ({self.origin}) failed to render a conversation: "
                            f"{exc}; fix the data or pass another --chat-template") from None

    @cached_property
    def turn_end(self) -> str | None:
        """The marker the template writes right after an assistant reply (``<|im_end|>``,
        ``<|eot_id|>``, ``<end_of_turn>``, ``{{ eos_token }}``..., else the first word of plain
        text it writes there), or None when it writes nothing.
        Found by rendering a probe conversation, so it holds for any template."""
        text = self.render([{"role": "user", "content": "hi"},
                            {"role": "assistant", "content": PROBE}])
        if PROBE not in text:
            return None
        after = text[text.rfind(PROBE) + len(PROBE):].lstrip()
        eos = self.variables.get("eos_token")
        if eos and after.startswith(eos):
            return eos
        found = MARKER.match(after)
        # A template of plain text (``;``, ``###``) ends a turn with what it writes first.
        return found.group(0) if found else (after.split() or [None])[0]

    def assistant_spans(self, messages: list[dict], tools: list | None = None,
                        documents: list | None = None, first: int = 0
                        ) -> tuple[str, list[tuple[int, int]]]:
        """(the whole conversation's text, the character spans of its assistant turns from
        message ``first`` on: each reply and the turn-end marker after it)."""
        text = self.render(messages, tools=tools, documents=documents)
        marker = self.turn_end
        if marker is None:
            raise DataError(f"the chat template ({self.origin}) writes no turn-end marker after "
                            "an assistant reply, so a model trained on it could not learn to "
                            "stop; pass a --chat-template that closes assistant turns, or "
                            "--train-on-prompt")
        spans: list[tuple[int, int]] = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant" or i < first:
                continue
            before = self.render(messages[:i], add_generation_prompt=True, tools=tools,
                                 documents=documents)
            # Where the prompt stops agreeing with the whole text: the generation prompt's end,
            # or, where the template renders earlier turns otherwise (Qwen 3 without thinking),
            # the first character the model writes there.
            start = _common_prefix(before, text)
            prompt = self.render(messages[:i], tools=tools, documents=documents) if i else ""
            if start < len(before):  # not at a word's middle (Qwen 3's <think> vs <tool_call>)
                floor = _common_prefix(prompt, text)
                start = max(floor, text.rfind("\n", floor, start) + 1,
                            text.rfind(">", floor, start) + 1)
            end = text.find(marker, start)
            previous = str(messages[i - 1].get("content") or "").strip() if i else ""
            at = text.rfind(previous, 0, end) if previous and end >= 0 else -1
            if at >= 0 and at + len(previous) > start:
                # The template moved part of the prompt (Mistral puts the system message in the
                # last user turn): the reply starts where its content does.
                start = self._content_start(messages, i, text, tools, documents)
                lead = self.reply_lead
                if lead and start >= len(lead) and text[start - len(lead):start] == lead:
                    start -= len(lead)
                end = text.find(marker, start)
            if start < _common_prefix(prompt, text) or (spans and start < spans[-1][1]) \
                    or end < 0 or end + len(marker) > self._turn_limit(messages, i, text, start,
                                                                      tools, documents):
                raise DataError(
                    f"the chat template ({self.origin}) does not render assistant turn {i} of a "
                    f"conversation followed by its turn end {marker!r}, so its trained tokens "
                    "cannot be located; pass --train-on-prompt, or another --chat-template")
            spans.append((start, end + len(marker)))
        return text, spans

    def _turn_limit(self, messages, i, text, start, tools, documents) -> int:
        """How far assistant turn ``i`` may reach in ``text``: the end of the conversation
        rendered up to it where that is a prefix of the whole; else (a template that rewrites
        the turn later) the start of the next message's content after the reply's."""
        after = self.render(messages[: i + 1], tools=tools, documents=documents)
        if text.startswith(after):
            return len(after)
        reply = str(messages[i].get("content") or "").strip()
        at = text.find(reply, start) if reply else -1
        after_reply = start if at < 0 else at + len(reply)
        following = [str(m.get("content") or "").strip() for m in messages[i + 1:i + 2]]
        cut = text.find(following[0], after_reply) if following and following[0] else -1
        return len(text) if cut < 0 else cut

    def _content_start(self, messages, i, text, tools, documents) -> int:
        """Where message ``i``'s content starts in ``text``: found by rendering a stand-in."""
        stand_in = "\x00kerastrain reply\x00"
        marked = self.render([*messages[:i], {**messages[i], "content": stand_in},
                              *messages[i + 1:]], tools=tools, documents=documents)
        at = marked.find(stand_in)
        return at if at >= 0 and marked[:at] == text[:at] else -1

    @cached_property
    def reply_lead(self) -> str:
        """What the template writes before an assistant reply's content beyond its generation
        prompt (Mistral v0.3's space after ``[/INST]``): the model writes it, so it is trained.
        Found by rendering a probe conversation, as :attr:`turn_end` is."""
        user = [{"role": "user", "content": "hi"}]
        prompt = self.render(user, add_generation_prompt=True)
        text = self.render([*user, {"role": "assistant", "content": PROBE}])
        at = text.find(PROBE)
        return text[len(prompt):at] if at >= len(prompt) and text.startswith(prompt) else ""

    def turn_end_ids(self, tokenizer) -> tuple[int, ...]:
        """Ids that end an assistant turn: the turn-end marker's (when it is one token), and EOS.
        Generation stops there; export writes them as ``generation_config.json``'s
        ``eos_token_id``."""
        ids: list[int] = []
        marker = self.turn_end
        if marker:
            encoded = tokenizer.encode_batch([marker])[0]
            if len(encoded) == 1:
                ids += encoded
        eos = getattr(tokenizer, "eos_id", None)
        if eos is not None and eos not in ids:
            ids.append(eos)
        return tuple(ids)

    def to_bytes(self) -> bytes:
        kwargs = {"template_kwargs": self.kwargs} if self.kwargs else {}
        return (json.dumps({"chat_template": self.source, **self.variables, **kwargs},
                           indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    def save(self, path: Path) -> None:
        Path(path).write_bytes(self.to_bytes())


def special_tokens_of(tokenizer) -> dict:
    """The special tokens a kerastrain tokenizer shows templates, as export writes them into
    ``tokenizer_config.json``: one end-of-text token, also the BOS (as GPT-2's)."""
    from kerastrain.data.tokenizer import EOS_TOKEN

    eos = getattr(tokenizer, "eos_token", EOS_TOKEN)
    return {"bos_token": eos, "eos_token": eos}


def folder_special_tokens(folder: Path) -> dict:
    """The special tokens a model folder's ``tokenizer_config.json`` declares."""
    path = Path(folder) / "tokenizer_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    return {name: text for name in SPECIAL_TOKEN_NAMES
            if (text := _token_text(config.get(name))) is not None}


def template_kwargs(pairs: dict) -> dict:
    """``--chat-template-kwargs KEY=VALUE`` values as the template sees them: JSON where the
    text is JSON (``enable_thinking=false`` is False), else the text."""
    out = {}
    for key, value in pairs.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = str(value)
    return out


def _token_text(value) -> str | None:
    """A special token of ``tokenizer_config.json``: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _template_of(files: list[Path], origin: str) -> ChatTemplate | None:
    """The template of the first JSON file (``tokenizer_config.json``, ``chat_template.json``)
    that has one, with the special tokens any of them names; None when none has a template."""
    config: dict = {}
    for config_path in files:
        if config_path.is_file():
            try:
                found = json.loads(config_path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ConfigError(f"{config_path} is not valid JSON: {exc}") from None
            config = {**found, **config} if isinstance(found, dict) else config
    variables = {name: text for name in SPECIAL_TOKEN_NAMES
                 if (text := _token_text(config.get(name))) is not None}
    kwargs = config.get("template_kwargs") if isinstance(config.get("template_kwargs"), dict) \
        else {}
    source = config.get("chat_template")
    if isinstance(source, list):  # named templates: [{"name": "default", "template": ...}]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default") or next(iter(named.values()), None)
    return ChatTemplate(source, origin, variables, kwargs) if source else None


def template_of_folder(folder: Path) -> ChatTemplate | None:
    """The ``chat_template`` of a model folder (``tokenizer_config.json``, ``chat_template.json``
    or ``chat_template.jinja``), or None when it has none."""
    folder = Path(folder)
    found = _template_of([folder / "tokenizer_config.json", folder / TEMPLATE_FILE], str(folder))
    if found is None and (folder / JINJA_FILE).is_file():
        found = ChatTemplate((folder / JINJA_FILE).read_text(encoding="utf-8"), str(folder),
                             folder_special_tokens(folder))
    return found


def load_chat_template(path: str | Path | None = None, model_folder: str | Path | None = None,
                       kwargs: dict | None = None) -> ChatTemplate:
    """The run's template: ``--chat-template FILE`` (a Jinja file, a model folder, or a JSON file
    with a ``chat_template``: ``tokenizer_config.json``, a run's ``chat_template.json``), else
    the ``--init-from`` folder's, else the built-in ChatML; with ``kwargs``
    (``--chat-template-kwargs``). Its special tokens: the ``--init-from`` folder's (its
    tokenizer is the run's), else those the template's JSON or folder declares (a run's own
    ``chat_template.json``), else a kerastrain tokenizer's (:func:`special_tokens_of`). A model
    folder without a template is refused: its model was not trained on ChatML."""
    template = _find_template(path, model_folder)
    if model_folder is not None:
        tokens = folder_special_tokens(model_folder)
    else:
        tokens = template.variables or special_tokens_of(None)
    return replace(template.with_special_tokens(tokens), kwargs={**template.kwargs,
                                                                 **(kwargs or {})})


def _find_template(path: str | Path | None, model_folder: str | Path | None) -> ChatTemplate:
    if path is not None:
        path = Path(path)
        if path.is_dir() or path.suffix == ".json":  # a folder, tokenizer_config.json ...
            found = template_of_folder(path) if path.is_dir() else _template_of([path], str(path))
            if found is None:
                raise ConfigError(f"--chat-template {path}: no chat_template there")
            return found
        if not path.is_file():
            raise ConfigError(f"--chat-template {path}: no such file")
        template = ChatTemplate(path.read_text(encoding="utf-8"), str(path))
        _compile(template.source)  # a syntax error: one line now
        return template
    if model_folder is not None:
        found = template_of_folder(Path(model_folder))
        if found is None:
            raise ConfigError(f"{model_folder} has no chat_template (tokenizer_config.json); pass "
                              "--chat-template FILE")
        return found
    return ChatTemplate(CHATML)
