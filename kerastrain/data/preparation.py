"""From the run's configuration to documents and a tokenizer: source lookup and tokenizer set-up."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DataPlan:
    """How the run reads its records: the data format, its context (template, options) and
    whether examples are packed with document masks."""

    format: object  # a kerastrain.data.formats.DataFormat
    context: object  # a FormatContext without the tokenizer
    packed: bool

    def with_tokenizer(self, tokenizer):
        return dataclasses.replace(self.context, tokenizer=tokenizer)

    def texts(self, documents: Documents, count: int) -> list[str]:
        """The first ``count`` records' texts (rendered conversations for chat)."""
        return [self.format.text(r, self.context)
                for r in itertools.islice(documents.iter_from(0), count)]

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """Tokens a tokenizer trained for this run must hold whole: ChatML's markers, the
        template's turn end (what generation stops at)."""
        from kerastrain.data.chat_template import CHATML_SPECIAL_TOKENS

        template = self.context.template
        if template is None:
            return ()
        from kerastrain.data.chat_template import MARKER

        found = CHATML_SPECIAL_TOKENS if template.is_chatml else ()
        end = template.turn_end
        # Only a marker's spelling (<|eot_id|>, <end_of_turn>): plain text (';') stays text.
        marker = end and (MARKER.fullmatch(end) or end == template.variables.get("eos_token"))
        return found + ((end,) if marker and end not in found else ())


CHECKED_RECORDS = 64  # records checked before anything is written (columns, roles, template)


def plan_data(config: RunConfig, train: Documents, model_folder: str | None = None, say=print
              ) -> DataPlan:
    """The run's data format (``--data-format``, or from the first record's columns), its chat
    template and packing; the first records are rendered now, so bad data fails in one line
    before anything is written."""
    from kerastrain.data.chat_template import load_chat_template, template_kwargs
    from kerastrain.data.formats import FormatContext, choose_format

    d = config.data
    first = next(iter(train.iter_from(0)), None)
    context = FormatContext(text_column=d.text_column, train_on_prompt=d.train_on_prompt)
    fmt = choose_format(d.data_format, first, context)
    # A format may need its template only for some records (preference pairs: message lists).
    if getattr(fmt, "needs_template_for", lambda record: fmt.needs_template)(first):
        template = load_chat_template(d.chat_template, model_folder,
                                      template_kwargs(d.chat_template_kwargs))
        context = dataclasses.replace(context, template=template)
    plan = DataPlan(fmt, context, bool(fmt.packed or d.document_masking))
    if d.stride is not None and (plan.packed or fmt.name != "text"):
        raise ConfigError(
            f"--stride applies to plain text cut into overlapping windows; {fmt.name} examples"
            f"{' with --document-masking' if d.document_masking else ''} are placed whole in "
            "rows: drop --stride")
    if fmt.name != "text" or d.data_format == "auto":
        for record in itertools.islice(train.iter_from(0), CHECKED_RECORDS):
            fmt.text(record, context)
    if d.data_format == "auto" and not isinstance(first, str):  # strings: nothing to pick from
        what = f" (chat template: {context.template.origin})" if context.template else ""
        say(f"Data format: {fmt.name}, from the first record's columns{what}")
    return plan


def open_documents(config: RunConfig, records: bool | None = None
                   ) -> tuple[Documents, Documents | None, str]:
    """Open the training split and, when there is one, the validation split.

    ``records`` (default: unless ``--data-format text``): ask the source for whole records.
    Returns (train, validation or None, a one-line description of the data).
    """
    d = config.data
    source, location = resolve_source(d.dataset_id[0] if d.dataset_id else None)
    if records is None:
        records = d.data_format != "text"

    def request(split: str) -> SourceRequest:
        return SourceRequest(
            location=location,
            split=split,
            dataset_config=d.dataset_config,
            text_column=d.text_column,
            streaming=d.streaming,
            data_dir=d.data_dir,
            records=records,
            storage_options=dict(d.data_options),
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


@dataclass(frozen=True)
class TrainingData:
    """The run's data, opened and checked: one dataset or a mixture (its datasets tagged)."""

    train: Documents
    val: Documents | None
    what: str  # a one-line description
    plan: DataPlan
    names: list[str] | None = None  # a mixture's dataset names, by tag (None: one dataset)


def _open_one(config: RunConfig, model_folder: str | None, say) -> TrainingData:
    train, val, what = open_documents(config)
    plan = plan_data(config, train, model_folder, say)  # bad records fail here, in one line
    if plan.format.name == "text" and config.data.data_format != "text":
        first = next(iter(train.iter_from(0)), None)
        if isinstance(first, dict):  # plain text after all: read the text column as before
            train, val, what = open_documents(config, records=False)
    return TrainingData(train, val, what, plan)


def open_data(config: RunConfig, model_folder: str | None = None, say=print) -> TrainingData:
    """Open the run's dataset, or each dataset of its mixture (:mod:`kerastrain.mixture_config`)
    with its own settings, and check their first records (bad data fails here, in one line)."""
    from kerastrain.mixture_config import datasets_of

    specs = datasets_of(config.data)
    if len(specs) == 1 and not config.data.datasets:
        return _open_one(config, model_folder, say)
    from kerastrain.data.formats import FormatContext
    from kerastrain.data.mixture import MixedFormat, MixtureDocuments

    parts = [_open_one(config.replace(data=spec.data_config(config.data)), model_folder,
                       lambda msg, name=spec.name: say(f"{name}: {msg}")) for spec in specs]
    names, weights = [s.name for s in specs], [s.weight for s in specs]
    seed, exhausted = config.train.seed, config.data.mixture_exhausted
    train = MixtureDocuments([p.train for p in parts], weights, seed=seed, names=names,
                             on_exhausted=exhausted, tags=range(len(parts)))
    held = [k for k, p in enumerate(parts) if p.val is not None]
    # Validation reads every dataset's held-out split whole (dropped as each runs out).
    val = MixtureDocuments([parts[k].val for k in held], [weights[k] for k in held], seed=seed,
                           names=[names[k] for k in held], on_exhausted="drop",
                           tags=held) if held else None
    fmt = MixedFormat([p.plan.format for p in parts], [p.plan.context for p in parts])
    template = next((p.plan.context.template for p in parts if p.plan.context.template), None)
    d = config.data
    context = FormatContext(template=template, text_column=d.text_column,
                            train_on_prompt=d.train_on_prompt)
    plan = DataPlan(fmt, context, any(p.plan.packed for p in parts))
    total = sum(weights)
    what = f"a mixture of {len(parts)} datasets ({exhausted} when one runs out): " + "; ".join(
        f"{n} {w / total:.0%} = {p.what}" for n, w, p in zip(names, weights, parts, strict=True))
    return TrainingData(train, val, what, plan, names)


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
                      retrain: bool | None = None, plan: DataPlan | None = None
                      ) -> tuple[TextTokenizer, bool]:
    """Reuse the tokenizer at ``path`` or train one on a sample and save it there; also whether
    it was trained now (for this request).

    ``retrain`` (default: ``--retrain-tokenizer``) trains even if the file exists. ``plan``: the
    texts come through the data format (rendered conversations), and the chat template's markers
    become special tokens."""
    tok_cfg = config.tokenizer
    retrain = tok_cfg.retrain if retrain is None else retrain
    if path.exists() and not retrain:
        tokenizer = load_tokenizer(path)
        say(f"Tokenizer: reusing {path} (vocab {tokenizer.vocab_size})")
        # Grown for this request: --vocab-size counts the vocabulary before the markers.
        grown = plan is not None and add_turn_end(tokenizer, plan, path, say)
        return tokenizer, grown
    kind = tokenizer_kind(tok_cfg.kind)
    limit = min(tok_cfg.train_examples, config.data.max_train_examples or tok_cfg.train_examples)
    texts = sample_texts(train, limit) if plan is None else plan.texts(train, limit)
    if not texts:
        raise DataError("the training split is empty; check --dataset-id, --split and filters")
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
    if plan is not None and plan.special_tokens and hasattr(tokenizer, "add_special_tokens"):
        tokenizer.add_special_tokens(plan.special_tokens)  # the template's markers: one token each
        say(f"Tokenizer: {', '.join(plan.special_tokens)} are special tokens (the chat "
            "template's markers; a turn ends at one token)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tokenizer.save(tmp)
    # The record first: a kill between the two leaves no tokenizer, never one without its record.
    _write_json(trained_for_path(path), {"sha256": _sha256(tmp), **tokenizer_request(config)})
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


def add_turn_end(tokenizer, plan: DataPlan, path: Path | None, say, rows: int | None = None
                 ) -> bool:
    """A reused tokenizer that spells the template's markers (ChatML's, its turn end) in
    pieces gets them as special tokens, saved to ``path``: generation can only stop at a turn end
    that is one token. Whether it grew. ``rows``: an imported model's embedding rows, which the
    new ids must fit in (its padding rows; the table itself is not grown)."""
    lacking = [t for t in plan.special_tokens if len(tokenizer.encode_batch([t])[0]) != 1]
    if not lacking or not hasattr(tokenizer, "add_special_tokens"):
        return False  # the bytes tokenizer (tests) spells every marker out
    if rows is not None and tokenizer.vocab_size + len(lacking) > rows:
        raise ConfigError(
            f"the --init-from folder's tokenizer spells the chat template's {', '.join(lacking)} "
            f"in pieces and its embedding table ({rows} rows) has no spare row for them; pass a "
            "--chat-template whose markers the tokenizer has (its own)")
    before = tokenizer.vocab_size
    tokenizer.add_special_tokens(lacking)
    say(f"Tokenizer: added {', '.join(lacking)} as special tokens (the chat template's "
        f"markers; vocab {before} -> {tokenizer.vocab_size})")
    if path is not None:
        tmp = path.with_name(path.name + ".tmp")
        tokenizer.save(tmp)
        tmp.replace(path)
    return True


def trained_for_path(path: Path) -> Path:
    """The record beside a tokenizer the run trained: the request it was trained for (a kill at
    any moment leaves a run whose tokenizer is recognised as its own by the same command)."""
    return path.with_name(path.stem + ".trained_for.json")


def tokenizer_request(config: RunConfig) -> dict:
    """The options that decide the tokenizer a run trains: its own, and the data it samples."""
    import json

    t, d = config.tokenizer, config.data
    request = {"tokenizer": {k: getattr(t, k) for k in ("kind", "vocab_size", "auto_vocab_size",
                                                        "min_vocab_size", "max_vocab_size",
                                                        "train_examples")},
               "data": {k: getattr(d, k) for k in ("dataset_id", "mixture_weights", "datasets",
                                                   "dataset_config", "split", "data_dir",
                                                   "text_column", "max_train_examples",
                                                   "data_format", "chat_template")},
               "seed": config.train.seed}  # a mixture's sample order
    return json.loads(json.dumps(request))  # plain JSON types, as read back


def vocab_trained_for(config: RunConfig, path: Path, trained_now: bool,
                      previous: RunConfig | None = None) -> int | None:
    """The ``--vocab-size`` the run's tokenizer at ``path`` was trained for, if known: now, by
    this same request (its record: the run may have been killed before any checkpoint), or by
    the resumed run (``previous``: the request of the checkpoint's run)."""
    import json

    if trained_now:
        return config.tokenizer.vocab_size
    try:
        record = json.loads(trained_for_path(path).read_text())
    except (OSError, ValueError):
        record = {}
    sha = record.pop("sha256", None)
    if record == tokenizer_request(config) and sha == _sha256(path):  # this very file
        return record["tokenizer"]["vocab_size"]
    return previous.tokenizer.vocab_size if previous is not None else None


def _sha256(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _write_json(path: Path, value: dict) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def check_vocab(config: RunConfig, vocab_size: int, trained_for: int | None = None) -> None:
    """An explicit ``--vocab-size`` must be the vocabulary the run will have (``vocab_size``: the
    tokenizer's or the ``--init-from`` folder's). ``trained_for``: the ``--vocab-size`` the run's
    tokenizer was trained for (:func:`vocab_trained_for`), when the data filled less of it: no
    contradiction."""
    asked = config.tokenizer.vocab_size
    if asked is not None and asked != vocab_size and asked != trained_for:
        raise ConfigError(
            f"--vocab-size {asked} disagrees with the tokenizer's vocabulary "
            f"({vocab_size}); pass --retrain-tokenizer or drop --vocab-size"
        )
