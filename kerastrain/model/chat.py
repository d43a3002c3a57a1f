"""A conversation with a trained model: its chat template, its history, streamed replies.

The prompt of each turn is the whole history rendered by the template the model was trained with
(``add_generation_prompt=True``), tokenized as training tokenized it; the reply streams through
:class:`~kerastrain.model.decoder.Decoder` (the one decoder: KV cache, one
compile per length bucket) and stops at the token the template closes an assistant turn with, or at EOS.
With ``tools`` (OpenAI function schemas) the template lists them as it did in training; the tool
calls a reply makes are read back from its markup (:attr:`Conversation.tool_calls`), and a tool's
result joins the history as a ``tool`` message answering the last call.
"""

from __future__ import annotations

from collections.abc import Iterator

from kerastrain.data.tool_calls import ToolCall, parse_tool_calls
from kerastrain.errors import ConfigError
from kerastrain.model.decoder import decoder_for, fit_prompt, stream_text


class Conversation:
    """The history of one chat; :meth:`reply` streams the model's answer and keeps it."""

    def __init__(self, model, tokenizer, template, sampler, *, max_new_tokens: int = 256,
                 system: str | None = None, tools: list | None = None) -> None:
        if template is None:
            raise ConfigError("this model was trained on plain text and has no chat template; "
                              "fine-tune it on chat data first (kerastrain run --data-format chat)")
        self.tokenizer = tokenizer
        self.template = template
        self.decoder = decoder_for(model)
        self.sampler = sampler
        self.max_new_tokens = max_new_tokens
        self.system = system
        self.tools = tools or None
        self.tool_calls: list[ToolCall] = []  # those of the last reply
        self.stops = template.turn_end_ids(tokenizer)
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.tool_calls = []

    def prompt_ids(self) -> list[int]:
        text = self.template.render(self.messages, add_generation_prompt=True, tools=self.tools)
        return self.tokenizer.encode_batch([text])[0]

    def reply(self, text: str, role: str = "user") -> Iterator[str]:
        """Pieces of the answer to ``text`` (a user message, or with ``role="tool"`` the result
        of the last tool call) as they are sampled; the whole answer joins the history once the
        stream ends, and its tool calls are read into :attr:`tool_calls`."""
        message = {"role": role, "content": text}
        if role == "tool" and self.tool_calls:
            message["tool_call_id"] = self.tool_calls[-1].id or self.tool_calls[-1].name
        self.messages.append(message)
        pieces = []
        prompt, most = fit_prompt(self.prompt_ids(), self.max_new_tokens, self.decoder.seq_len)
        ids = self.decoder.stream(prompt, most, self.sampler, self.stops)
        for piece in stream_text(ids, self.tokenizer, self.stops):
            pieces.append(piece)
            yield piece
        answer = "".join(pieces)
        self.messages.append({"role": "assistant", "content": answer})
        self.tool_calls = parse_tool_calls(answer)[1]
