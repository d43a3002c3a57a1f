"""Preference records (the ``preference`` data format): a prompt, a chosen and a rejected reply.

The forms people have, as TRL reads them:

* ``prompt`` / ``chosen`` / ``rejected`` as strings (completion style): each side is the prompt's
  tokens, the reply's and EOS; the reply and EOS are trained;
* the same as message lists (TRL's conversational form: the prompt's turns, then each reply's
  assistant turns), rendered with the run's chat template
  (:mod:`kerastrain.data.chat_template`); the replies' assistant turns are trained, each with
  its turn end, as the ``chat`` format trains them;
* ``chosen`` / ``rejected`` alone, as whole conversations (UltraFeedback's form) or strings,
  sharing a prefix: the prompt is the longest shared prefix, found as TRL's ``extract_prompt``
  does (messages compared one by one; for strings, characters, with a space before the first
  difference left to the replies).

A record missing a side, with identical sides or an empty reply is a one-line
:class:`~kerastrain.errors.DataError` naming it. Each record becomes a :class:`PairExample`,
which the packer (:mod:`kerastrain.data.packing`) places in one row, both sides
as their own segments.
"""

from __future__ import annotations

from dataclasses import dataclass

from kerastrain.data.formats import (
    Example,
    FormatContext,
    _content,
    _encode_marked,
    _is_message,
    describe,
    messages_of,
)
from kerastrain.errors import DataError
from kerastrain.hookspecs import hookimpl


@dataclass
class PairExample:
    """One preference pair: each side a whole :class:`Example` (the prompt, then the reply), and
    how many leading ids the two sides share (the prompt, as tokenized)."""

    chosen: Example
    rejected: Example
    prompt_len: int
    whole: bool = True

    @property
    def ids(self) -> list[int]:
        """Both sides' ids (what a pair takes of a row, for estimates of the data's size)."""
        return [*self.chosen.ids, *self.rejected.ids[1:]]


def shared_prefix(chosen, rejected):
    """TRL's ``extract_prompt``: the length of the prefix ``chosen`` and ``rejected`` share
    (strings: characters, a space just before the first difference left to the replies;
    message lists: whole messages)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if isinstance(chosen, str) and n and n < min(len(chosen), len(rejected)) and \
            chosen[n - 1] == " ":
        n -= 1
    return n


def _is_messages(value) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_message(m) for m in value)


class PreferenceFormat:
    name = "preference"
    description = ("Preference pairs: prompt / chosen / rejected (strings or message lists), or "
                   "chosen / rejected conversations sharing a prefix; the replies trained")
    columns = "chosen and rejected (and prompt)"
    packed = True
    needs_template = True  # for conversational pairs; string pairs render without it
    pairs = True

    def needs_template_for(self, record) -> bool:
        """Only pairs of message lists render through the chat template (string pairs do not:
        no template, no chat markers added to the tokenizer)."""
        return isinstance(record, dict) and any(_is_messages(record.get(k))
                                                for k in ("prompt", "chosen", "rejected"))

    def matches(self, record, context: FormatContext) -> bool:
        return isinstance(record, dict) and ("chosen" in record or "rejected" in record)

    def parts(self, record) -> tuple:
        """(prompt, chosen reply, rejected reply): three strings, or three message lists."""
        if not isinstance(record, dict):
            raise DataError(f"a preference record must be an object with chosen and rejected: "
                            f"{describe(record)}")
        for side in ("chosen", "rejected"):
            if record.get(side) in (None, "", []):
                raise DataError(f"a preference record has no {side} reply: {describe(record)}; "
                                "every record needs both chosen and rejected")
        chosen, rejected = record["chosen"], record["rejected"]
        if chosen == rejected:
            raise DataError(f"a preference record's chosen and rejected are identical, so there "
                            f"is nothing to prefer: {describe(record)}; drop it from the data")
        conversational = _is_messages(chosen) and _is_messages(rejected)
        if not conversational and not (isinstance(chosen, str) and isinstance(rejected, str)):
            raise DataError(f"a preference record's chosen and rejected must both be text or "
                            f"both message lists: {describe(record)}")
        prompt = record.get("prompt")
        if prompt is None:  # the shared prefix is the prompt (TRL's implicit prompt)
            n = shared_prefix(chosen, rejected)
            prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
        elif conversational and isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        elif not conversational:
            prompt = _content(prompt)
        for side, reply in (("chosen", chosen), ("rejected", rejected)):
            if not reply:
                raise DataError(f"a preference record's {side} reply is empty once the prompt "
                                f"they share is taken out: {describe(record)}")
        return prompt, chosen, rejected

    def text(self, record, context: FormatContext) -> str:
        prompt, chosen, rejected = self.parts(record)
        if isinstance(chosen, str):
            return prompt + chosen + rejected
        return "".join(self._render(prompt, reply, record, context)[0]
                       for reply in (chosen, rejected))

    def _render(self, prompt, reply, record, context):
        if context.template is None:  # the first record's pairs were text: no template loaded
            raise DataError(f"a preference record holds message lists where the first record "
                            f"held text; give one form per dataset: {describe(record)}")
        messages = messages_of({"prompt": prompt, "completion": reply})
        if not any(m["role"] == "assistant" for m in messages[len(prompt):]):
            raise DataError(f"a preference record's reply has no assistant turn: "
                            f"{describe(record)}")
        return context.template.assistant_spans(messages, None, None, len(prompt))

    def encode(self, records: list, context: FormatContext) -> list[PairExample]:
        tok = context.tokenizer
        parts = [self.parts(r) for r in records]
        out = []
        for record, (prompt, chosen, rejected) in zip(records, parts, strict=True):
            if isinstance(chosen, str):
                p, c, r = tok.encode_batch([prompt, chosen, rejected])
                sides = [([*p, *reply, tok.eos_id], [False] * len(p) + [True] * (len(reply) + 1))
                         for reply in (c, r)]
            else:
                rendered = [self._render(prompt, reply, record, context)
                            for reply in (chosen, rejected)]
                sides = _encode_marked(tok, [t for t, _ in rendered], [s for _, s in rendered])
            for _ids, mask in sides:
                if not any(mask[1:]):
                    raise DataError(f"a preference record's reply has no trained token: "
                                    f"{describe(record)}")
            (c_ids, c_mask), (r_ids, r_mask) = sides
            shared = 0
            while shared < min(len(c_ids), len(r_ids)) - 1 and c_ids[shared] == r_ids[shared] \
                    and not c_mask[shared] and not r_mask[shared]:
                shared += 1
            out.append(PairExample(Example(list(c_ids), list(c_mask)),
                                   Example(list(r_ids), list(r_mask)), shared))
        return out


@hookimpl
def register_data_formats(register):
    register(PreferenceFormat())


def truncated_sides(pair, seq_len: int):
    """Both sides of ``pair`` cut to fit one row of ``seq_len`` positions together (see the
    module docstring): ``[(ids, mask), (ids, mask)]``."""
    budget = (seq_len + 2) // 2  # tokens per side: (budget - 1) positions each
    prompt = min(pair.prompt_len, len(pair.chosen.ids) - 1, len(pair.rejected.ids) - 1)
    longest = max(len(pair.chosen.ids), len(pair.rejected.ids)) - prompt
    keep = min(prompt, max(budget - longest, budget // 2))
    sides = []
    for side in (pair.chosen, pair.rejected):
        reply = slice(prompt, prompt + budget - keep)
        sides.append((side.ids[prompt - keep:prompt] + side.ids[reply],
                      side.mask[prompt - keep:prompt] + side.mask[reply]))
    return sides
