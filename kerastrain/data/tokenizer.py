"""Tokenizers: byte-level BPE (HF ``tokenizers``, the default) and raw bytes (for tests).

Each kind is registered as a plugin. A trained tokenizer is saved as ``tokenizer.json``; the file
says which kind wrote it, so :func:`load_tokenizer` needs nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from kerastrain.errors import ConfigError
from kerastrain.hookspecs import hookimpl

EOS_TOKEN = "<|endoftext|>"
# End-of-text tokens of pretrained tokenizers (GPT-2/ours, Llama 3, Llama 2/Mistral, ChatML, Gemma)
# that --init-from folders bring; the first one the vocabulary has is the EOS.
EOS_CANDIDATES = (EOS_TOKEN, "<|end_of_text|>", "</s>", "<|im_end|>", "<eos>")


@runtime_checkable
class TextTokenizer(Protocol):
    """What the pipeline, trainer and generator need of a tokenizer."""

    kind: str
    vocab_size: int
    eos_id: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def save(self, path: Path) -> None: ...


@runtime_checkable
class TokenizerKind(Protocol):
    """A tokenizer family, registered by a plugin under ``name``."""

    name: str
    description: str

    def train(self, texts: Iterable[str], vocab_size: int) -> TextTokenizer: ...

    def can_load(self, data: dict) -> bool:
        """Whether the parsed ``tokenizer.json`` was written by this kind."""
        ...

    def load(self, path: Path) -> TextTokenizer: ...


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` with the EOS special token, trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


class BPETokenizer:
    """A byte-level BPE tokenizer from HF ``tokenizers`` (the Rust one: ~0.5M tokens/s/core)."""

    kind = "bpe"

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        self.eos_token = next((t for t in EOS_CANDIDATES if hf_tokenizer.token_to_id(t) is not None),
                              EOS_TOKEN)
        self.eos_id = hf_tokenizer.token_to_id(self.eos_token)
        self.vocab_size = hf_tokenizer.get_vocab_size()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets: the same ids,
        # measured 7% faster on the pipeline benchmark's prose.
        encode = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        return [enc.ids for enc in encode(texts, add_special_tokens=False)]

    def encode_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids and each token's character span, for loss masks by character (chat)."""
        return [(enc.ids, enc.offsets) for enc in self.hf.encode_batch(texts,
                                                                       add_special_tokens=False)]

    def add_special_tokens(self, tokens: Sequence[str]) -> None:
        """Add ``tokens`` (e.g. ChatML's markers) as special tokens: never split, one id each."""
        self.hf.add_special_tokens(list(tokens))
        self.vocab_size = self.hf.get_vocab_size()

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids))

    def save(self, path: Path) -> None:
        self.hf.save(str(path))


class BPEKind:
    name = "bpe"
    description = "Byte-level BPE (HF tokenizers), trained on a sample of the data"

    def train(self, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        return BPETokenizer(train_byte_level_bpe(texts, vocab_size))

    def can_load(self, data: dict) -> bool:
        return "model" in data and "kerastrain_tokenizer" not in data

    def load(self, path: Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        if all(tok.token_to_id(t) is None for t in EOS_CANDIDATES):
            raise ConfigError(f"{path} has no end-of-text token ({', '.join(EOS_CANDIDATES)}); "
                              "retrain with --retrain-tokenizer")
        return BPETokenizer(tok)


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, plus EOS = 256. Needs no training; handy in tests."""

    kind = "bytes"
    vocab_size = 257
    eos_id = 256

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def encode_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        out = []
        for text in texts:
            ids, offsets = [], []
            for i, char in enumerate(text):
                encoded = char.encode("utf-8")
                ids.extend(encoded)
                offsets.extend([(i, i + 1)] * len(encoded))
            out.append((ids, offsets))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"kerastrain_tokenizer": "bytes", "vocab_size": 257}))


class ByteKind:
    name = "bytes"
    description = "UTF-8 bytes (vocab 257), no training"
    fixed_vocab_size = True  # --vocab-size does not apply: no notice when it differs

    def train(self, texts: Iterable[str], vocab_size: int) -> ByteTokenizer:
        return ByteTokenizer()

    def can_load(self, data: dict) -> bool:
        return data.get("kerastrain_tokenizer") == "bytes"

    def load(self, path: Path) -> ByteTokenizer:
        return ByteTokenizer()


@hookimpl
def register_tokenizers(register):
    register(BPEKind())
    register(ByteKind())


def tokenizer_kind(name: str) -> TokenizerKind:
    from kerastrain.plugins import tokenizer_kinds

    kinds = tokenizer_kinds()
    if name not in kinds:
        raise ConfigError(f"unknown tokenizer {name!r}; installed: {', '.join(sorted(kinds))}")
    return kinds[name].obj


def load_tokenizer(path: Path | str) -> TextTokenizer:
    """Load a ``tokenizer.json`` written by any installed tokenizer kind."""
    from kerastrain.plugins import tokenizer_kinds

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read tokenizer {path}: {exc}; pass --retrain-tokenizer") from exc
    for reg in tokenizer_kinds().values():
        if reg.obj.can_load(data):
            return reg.obj.load(path)
    raise ConfigError(f"no installed tokenizer kind can read {path}; pass --retrain-tokenizer")
