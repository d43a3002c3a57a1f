"""Token-by-token generation with the key/value cache, for a terminal that shows text as it comes.

keras-hub's ``CausalLM.generate`` (:mod:`kerastrain.model.causal_lm`) runs the whole sampling loop
inside one compiled ``while_loop`` and returns when it ends, so it cannot stream. Here the same
:meth:`GPTCausalLM.call_with_cache` runs as two compiled functions, a prefill of the prompt and a
one-token step, both stateless over the model's variables (weights are arguments, not constants
baked into the program), and each token is drawn by the same keras-hub sampler object
(``compute_probabilities`` + ``get_next_token``) between steps. Greedy decoding therefore gives
the ids :func:`~kerastrain.model.causal_lm.generate_ids` gives (tested).
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import keras
import numpy as np

from kerastrain.model.causal_lm import GPTCausalLM, bucket_length


class StreamingDecoder:
    """Yields the ids ``model`` samples after a prompt one at a time; compiled once per length
    bucket, shared by every call (a chat's turns)."""

    def __init__(self, model, sampler) -> None:
        self.model = model
        self.sampler = sampler
        self.lm = GPTCausalLM(model, compile=False)
        self._variables = self.lm.variables

        def stateless(fn):
            def run(values, *args):
                mapping = list(zip(self._variables, values, strict=True))
                with keras.StatelessScope(state_mapping=mapping):
                    return fn(*args)

            return jax.jit(run)

        self._prefill = stateless(self.lm._build_cache)
        self._step = stateless(self._next_logits)

    def _next_logits(self, token, cache, position):
        logits, _, cache = self.lm.call_with_cache(token, cache, position)
        return logits[:, -1], cache

    def stream(self, prompt_ids: list[int], max_new_tokens: int,
               stop_token_ids: tuple[int, ...] = ()) -> Iterator[int]:
        """New token ids, one at a time; the first stop token is yielded and ends the stream.

        As in ``generate_ids`` the sequence is capped at the model's ``seq_len``: the prompt is cut
        from the left when it and the new tokens do not fit.
        """
        seq_len = self.model.config.seq_len
        max_new_tokens = min(max_new_tokens, seq_len - 1)
        prompt_ids = list(prompt_ids)[-(seq_len - max_new_tokens):] or [0]
        length = bucket_length(len(prompt_ids) + max_new_tokens, seq_len)
        ids = np.zeros((1, length), "int32")
        ids[0, : len(prompt_ids)] = prompt_ids
        values = [v.value for v in self._variables]
        _, cache = self._prefill(values, ids)
        token = prompt_ids[-1]
        stops = set(stop_token_ids)
        for position in range(len(prompt_ids) - 1, len(prompt_ids) - 1 + max_new_tokens):
            # Feed the last token at its position: the logits of the one after it come back.
            logits, cache = self._step(values, np.array([[token]], "int32"), cache,
                                       np.int32(position))
            probabilities = self.sampler.compute_probabilities(logits)
            token = int(np.asarray(self.sampler.get_next_token(probabilities))[0])
            yield token
            if token in stops:
                return


def stream_text(decoder: StreamingDecoder, tokenizer, prompt_ids: list[int], max_new_tokens: int,
                stop_token_ids: tuple[int, ...] = ()) -> Iterator[str]:
    """The decoded text of the new tokens, piece by piece (stop tokens are not shown).

    Pieces are the growth of the decoded text, so a character split over several byte-level
    tokens appears once it is whole (the partial character decodes to U+FFFD and is held back).
    """
    new: list[int] = []
    shown = ""
    for token in decoder.stream(prompt_ids, max_new_tokens, stop_token_ids):
        if token in stop_token_ids:
            break
        new.append(token)
        text = tokenizer.decode(new)
        if text.endswith("\ufffd"):
            continue
        if text.startswith(shown):
            yield text[len(shown):]
            shown = text
    text = tokenizer.decode(new)
    if text.startswith(shown) and len(text) > len(shown):
        yield text[len(shown):]
