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

Which characters are trained (assistant turns) is found by rendering prefixes of the conversation
and taking the difference: turn ``i`` spans from the end of ``messages[:i]`` rendered with the
generation prompt to the end of ``messages[:i + 1]``. This works for any template that renders a
conversation incrementally (ChatML, Llama 3, Qwen 2.5, Gemma, Mistral...) without marking it up;
transformers' ``{% generation %}`` tags are accepted (rendered as plain text) but not needed. A
template that rewrites earlier turns once later ones exist cannot be split this way: it is
refused in one line (``--train-on-prompt`` trains every token and needs no split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
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
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise ConfigError(f"the chat template does not parse: {exc.message} (line {exc.lineno})"
                          ) from None


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template and the special tokens it may refer to (``bos_token``...)."""

    source: str
    origin: str = "built-in ChatML"  # where it came from, for messages
    variables: dict = field(default_factory=dict)  # bos_token, eos_token, ... as strings

    @property
    def is_chatml(self) -> bool:
        return self.source == CHATML

    def render(self, messages: list[dict], add_generation_prompt: bool = False, **kwargs) -> str:
        """The text of ``messages`` (``[{role, content}, ...]``), as transformers renders it."""
        import jinja2

        template = _compile(self.source)
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   **{**self.variables, **kwargs})
        except jinja2.exceptions.TemplateError as exc:
            raise DataError(f"the chat template ({self.origin}) failed to render a conversation: "
                            f"{exc}; fix the data or pass another --chat-template") from None

    def assistant_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """(the whole conversation's text, the character spans of its assistant turns)."""
        text = self.render(messages)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True)
            after = self.render(messages[: i + 1])
            if not (after.startswith(before) and text.startswith(after)):
                raise DataError(
                    f"the chat template ({self.origin}) renders a conversation's earlier turns "
                    "differently once later turns follow, so its assistant turns cannot be "
                    "located; pass --train-on-prompt, or a --chat-template that renders turns "
                    "incrementally")
            if len(after) > len(before):
                spans.append((len(before), len(after)))
        return text, spans

    def turn_end_ids(self, tokenizer) -> tuple[int, ...]:
        """Ids that end an assistant turn: the special token the template writes right after an
        assistant message's content (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>`` ...), and
        EOS. Found by rendering a probe conversation and tokenizing what follows the reply, so it
        holds for any template rather than a table of known ones (generation stops there; export
        writes them as ``generation_config.json``'s ``eos_token_id``)."""
        probe = "kerastrain probe reply"
        text = self.render([{"role": "user", "content": "hi"},
                            {"role": "assistant", "content": probe}])
        ids: list[int] = []
        after = text[text.rfind(probe) + len(probe):].strip() if probe in text else ""
        if after:
            first = tokenizer.encode_batch([after])[0][:1]
            hf = getattr(tokenizer, "hf", None)  # added tokens are the markers; text is not
            if first and hf is not None and first[0] in hf.get_added_tokens_decoder():
                ids += first
        eos = getattr(tokenizer, "eos_id", None)
        if eos is not None and eos not in ids:
            ids.append(eos)
        return tuple(ids)

    def to_bytes(self) -> bytes:
        return (json.dumps({"chat_template": self.source, **self.variables}, indent=1,
                           ensure_ascii=False) + "\n").encode("utf-8")

    def save(self, path: Path) -> None:
        Path(path).write_bytes(self.to_bytes())


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
    variables = {name: text for name in ("bos_token", "eos_token", "pad_token", "unk_token")
                 if (text := _token_text(config.get(name))) is not None}
    source = config.get("chat_template")
    if isinstance(source, list):  # named templates: [{"name": "default", "template": ...}]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default") or next(iter(named.values()), None)
    return ChatTemplate(source, origin, variables) if source else None


def template_of_folder(folder: Path) -> ChatTemplate | None:
    """The ``chat_template`` of a model folder (``tokenizer_config.json``, ``chat_template.json``
    or ``chat_template.jinja``), or None when it has none."""
    folder = Path(folder)
    found = _template_of([folder / "tokenizer_config.json", folder / TEMPLATE_FILE], str(folder))
    if found is None and (folder / JINJA_FILE).is_file():
        found = ChatTemplate((folder / JINJA_FILE).read_text(encoding="utf-8"), str(folder))
    return found


def load_chat_template(path: str | Path | None = None, model_folder: str | Path | None = None
                       ) -> ChatTemplate:
    """The run's template: ``--chat-template FILE`` (a Jinja file, a model folder, or a JSON file
    with a ``chat_template``: ``tokenizer_config.json``, a run's ``chat_template.json``), else the ``--init-from`` folder's, else the built-in ChatML.
    A model folder without a template is refused: its model was not trained on ChatML."""
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
