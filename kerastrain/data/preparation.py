"""From the run's configuration to documents and a tokenizer: source lookup and tokenizer set-up."""

from __future__ import annotations

import itertools
from pathlib import Path

from kerastrain.config import RunConfig
from kerastrain.data.sources import FALLBACK_SOURCE, Documents, SourceRequest, parse_dataset_id
from kerastrain.data.tokenizer import TextTokenizer, load_tokenizer, tokenizer_kind
from kerastrain.errors import ConfigError, DataError


def resolve_source(dataset_id: str | None):
    """The registered source for ``--dataset-id`` and the location to hand it."""
    from kerastrain.plugins import data_sources

    sources = data_sources()
    name, location = parse_dataset_id(dataset_id, set(sources))
    head, sep, _ = (dataset_id or "").partition(":")
    url = (dataset_id or "")[len(head) + 1 :].startswith("//")  # s3://, gs://, https://...
    if (sep and name == FALLBACK_SOURCE and head.isidentifier() and not url
            and not Path(dataset_id).exists()):
        raise DataError(
            f"no data source named {head!r} is installed (installed: "
            f"{', '.join(sorted(sources))}); install its plugin, or pass an existing path"
        )
    if name not in sources:
        raise DataError(
            f"no installed data source can read {dataset_id!r} (it needs the {name!r} source); "
            f"installed sources: {', '.join(sorted(sources))}. Install the plugin "
            f"(e.g. kerastrain-{name}) or pass a local path"
        )
    return sources[name].obj, location


def open_documents(config: RunConfig) -> tuple[Documents, Documents | None, str]:
    """Open the training split and, when there is one, the validation split.

    Returns (train, validation or None, a one-line description of the data).
    """
    d = config.data
    source, location = resolve_source(d.dataset_id)

    def request(split: str) -> SourceRequest:
        return SourceRequest(
            location=location,
            split=split,
            dataset_config=d.dataset_config,
            text_column=d.text_column,
            streaming=d.streaming,
            data_dir=d.data_dir,
        )

    train = source.open(request(d.split))
    val_split = d.val_split
    if val_split is None and source.name == "builtin":
        val_split = "validation"  # the embedded corpus always has its held-out split
    val = source.open(request(val_split)) if val_split else None
    what = f"source {source.name!r}" + (f" {location!r}" if location else "")
    if source.name == "builtin":
        what = "the embedded default corpus (CPython documentation, offline, no download)"
    return train, val, what


def sample_texts(documents: Documents, count: int) -> list[str]:
    """The first ``count`` documents: what the tokenizer is trained on."""
    texts = list(itertools.islice(documents.iter_from(0), count))
    if not texts:
        raise DataError("the training split is empty; check --dataset-id, --split and filters")
    return texts


def tokenizer_path(config: RunConfig, output_dir: Path) -> Path:
    """Where the run's tokenizer lives: ``--tokenizer-path`` or ``OUTPUT_DIR/tokenizer.json``."""
    return Path(config.tokenizer.path) if config.tokenizer.path else Path(output_dir) / "tokenizer.json"


def prepare_tokenizer(config: RunConfig, train: Documents, path: Path, say=print,
                      retrain: bool | None = None) -> tuple[TextTokenizer, bool]:
    """Reuse the tokenizer at ``path`` or train one on a sample and save it there; also whether
    it was trained now (for this request).

    ``retrain`` (default: ``--retrain-tokenizer``) trains even if the file exists."""
    tok_cfg = config.tokenizer
    retrain = tok_cfg.retrain if retrain is None else retrain
    if path.exists() and not retrain:
        tokenizer = load_tokenizer(path)
        say(f"Tokenizer: reusing {path} (vocab {tokenizer.vocab_size})")
        return tokenizer, False
    kind = tokenizer_kind(tok_cfg.kind)
    limit = min(tok_cfg.train_examples, config.data.max_train_examples or tok_cfg.train_examples)
    texts = sample_texts(train, limit)
    if tok_cfg.auto_vocab_size and kind.name == "bpe":
        from tokenizers import Tokenizer

        from kerastrain.data.tokenizer import BPETokenizer
        from kerastrain.data.vocab_size import choose_vocab_size

        choice = choose_vocab_size(texts, tok_cfg.min_vocab_size, tok_cfg.max_vocab_size)
        say(f"Tokenizer: {choice.summary}")
        # The search's tokenizer cut to the chosen size equals one trained at that size.
        tokenizer = BPETokenizer(Tokenizer.from_str(choice.tokenizer_json))
    else:
        tokenizer = kind.train(texts, tok_cfg.asked_vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tokenizer.save(tmp)
    tmp.replace(path)
    say(
        f"Tokenizer: trained {kind.name} on {len(texts)} documents, vocab "
        f"{tokenizer.vocab_size}, saved to {path}"
    )
    if tokenizer.vocab_size < tok_cfg.asked_vocab_size and not tok_cfg.auto_vocab_size \
            and not getattr(kind, "fixed_vocab_size", False):
        # The data cannot fill the size asked: the model follows what it reached.
        say(f"Tokenizer: the data fills {tokenizer.vocab_size} of the "
            f"{tok_cfg.asked_vocab_size} tokens asked (--vocab-size); using "
            f"{tokenizer.vocab_size}, the model follows")
    return tokenizer, True


def check_vocab(config: RunConfig, vocab_size: int, trained_for: int | None = None) -> None:
    """An explicit ``--vocab-size`` must be the vocabulary the run will have (``vocab_size``: the
    tokenizer's or the ``--init-from`` folder's). ``trained_for``: the ``--vocab-size`` the
    checkpoint being resumed was asked for, when the data filled less of it: no contradiction."""
    asked = config.tokenizer.vocab_size
    if asked is not None and asked != vocab_size and asked != trained_for:
        raise ConfigError(
            f"--vocab-size {asked} disagrees with the tokenizer's vocabulary "
            f"({vocab_size}); pass --retrain-tokenizer or drop --vocab-size"
        )
