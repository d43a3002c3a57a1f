"""Choose a BPE vocabulary size from a sample of the training text (``--auto-vocab-size``).

Method
------
A larger vocabulary compresses text into fewer tokens (more characters per token), with quickly
diminishing returns, while every extra token costs embedding and softmax parameters. We take the
smallest size that keeps almost all of the compression the largest allowed size gives:

1. Split the sample into a training part and a held-out part (every 10th text is held out, so
   both parts span the whole sample; a single text is cut at 90 % of its characters).
2. Train one byte-level BPE tokenizer (HF ``tokenizers``: ByteLevel pre-tokenizer and decoder,
   special token ``<|endoftext|>``) at ``max_size`` on the training part.
3. The tokenizer a BPE trainer gives for a smaller size ``v`` is the same one truncated to its
   first ``v`` tokens: training adds one merge at a time, each chosen from the counts left by the
   previous merges, so a shorter run is a prefix of a longer one. We therefore truncate instead
   of retraining (checked in ``tests/test_vocab_size.py``).
4. Measure characters per token (``chars/token``) on the held-out part, which rewards merges that
   generalise rather than memorise the training part. Adding a merge never increases a word's
   token count, so ``chars/token`` does not decrease with the size, and a binary search over
   ``[min_size, max_size]`` finds the smallest size whose ``chars/token`` is at least
   ``(1 - tolerance)`` times that of the largest.

When the sample is too small to learn ``max_size`` tokens, the largest size the trainer reached
stands in for ``max_size``; when it is below ``min_size`` we return ``min_size`` and say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kerastrain.data.tokenizer import train_byte_level_bpe
from kerastrain.errors import ConfigError, DataError

HELD_OUT_EVERY = 10


@dataclass(frozen=True)
class VocabChoice:
    """The chosen size and the measurements behind it."""

    size: int
    chars_per_token: float  # on the held-out text, at ``size``
    max_chars_per_token: float  # on the held-out text, at the largest size trained
    max_size: int  # the largest size trained (``max_size``, or less for a small sample)
    tolerance: float
    tokenizer_json: str = field(repr=False, default="")  # the tokenizer truncated to ``size``

    @property
    def summary(self) -> str:
        """One line for the log."""
        if self.max_size < self.size:
            return (
                f"vocab size {self.size}: the sample yields only {self.max_size} tokens "
                f"({self.max_chars_per_token:.3f} chars/token on held-out text); give it more text"
            )
        loss = 1 - self.chars_per_token / self.max_chars_per_token
        return (
            f"vocab size {self.size}: {self.chars_per_token:.3f} chars/token on held-out text, "
            f"{loss:.1%} below the {self.max_chars_per_token:.3f} of size {self.max_size} "
            f"(tolerance {self.tolerance:.1%})"
        )


def _split(texts: list[str]) -> tuple[list[str], list[str]]:
    if len(texts) == 1:
        cut = int(len(texts[0]) * 0.9)
        return [texts[0][:cut]], [texts[0][cut:]]
    held = [t for i, t in enumerate(texts) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    train = [t for i, t in enumerate(texts) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    return train, held or train[-1:]


def truncate(tokenizer_json: str, size: int) -> str:
    """The tokenizer (as JSON) keeping its first ``size`` tokens and the merges that make them."""
    data = json.loads(tokenizer_json)
    model = data["model"]
    vocab = {token: i for token, i in model["vocab"].items() if i < size}
    merges = []
    for merge in model["merges"]:
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        if left + right in vocab and left in vocab and right in vocab:
            merges.append(merge)
    model["vocab"], model["merges"] = vocab, merges
    data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < size]
    return json.dumps(data)


def _chars_per_token(tokenizer_json: str, held_out: list[str]) -> float:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(held_out))
    return sum(len(t) for t in held_out) / max(tokens, 1)


def choose_vocab_size(
    texts: list[str], min_size: int, max_size: int, tolerance: float = 0.03
) -> VocabChoice:
    """The smallest vocabulary in ``[min_size, max_size]`` within ``tolerance`` of the largest's
    compression (characters per token on held-out text); see the module docstring."""
    base = 1 + 256  # the special token and the byte alphabet are in every vocabulary
    if min_size < base or min_size > max_size:
        raise ConfigError(
            f"vocabulary sizes must satisfy {base} <= min ({min_size}) <= max ({max_size})"
        )
    if not 0 <= tolerance < 1:
        raise ConfigError(f"tolerance must be in [0, 1), got {tolerance}")
    texts = [t for t in texts if t]
    if not texts:
        raise DataError("no text to choose a vocabulary size from")
    train, held_out = _split(texts)
    full = train_byte_level_bpe(train, max_size).to_str()
    trained = vocabulary_size(full)
    top = _chars_per_token(full, held_out)
    if trained <= min_size:
        size = min_size
        cpt = top
        tokenizer_json = full
    else:
        target = (1 - tolerance) * top
        lo, hi = min_size, trained  # invariant: ``hi`` meets the target
        measured = {trained: top}
        while lo < hi:
            mid = (lo + hi) // 2
            measured[mid] = _chars_per_token(truncate(full, mid), held_out)
            if measured[mid] >= target:
                hi = mid
            else:
                lo = mid + 1
        size = hi
        cpt = measured.get(size) or _chars_per_token(truncate(full, size), held_out)
        tokenizer_json = truncate(full, size) if size < trained else full
    return VocabChoice(size, cpt, top, trained, tolerance, tokenizer_json)


def vocabulary_size(tokenizer_json: str) -> int:
    """Number of tokens in a tokenizer given as JSON (model vocabulary plus added tokens)."""
    data = json.loads(tokenizer_json)
    ids = set(data["model"]["vocab"].values()) | {t["id"] for t in data.get("added_tokens", [])}
    return len(ids)
