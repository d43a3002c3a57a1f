"""choose_vocab_size: truncation equals retraining, the choice is minimal and within tolerance."""

from __future__ import annotations

import pydoc_data.topics

import pytest

from kerastrain.data.vocab_size import (
    _chars_per_token,
    _split,
    choose_vocab_size,
    train_byte_level_bpe,
    truncate,
    vocabulary_size,
)
from kerastrain.errors import ConfigError, DataError

TEXTS = list(pydoc_data.topics.topics.values())  # ~0.47M characters of real prose and code


@pytest.fixture(scope="module")
def full_json():
    return train_byte_level_bpe(TEXTS, 1500).to_str()


@pytest.mark.parametrize("size", [257, 400, 1000])
def test_truncating_merges_equals_training_at_that_size(full_json, size):
    from tokenizers import Tokenizer

    truncated = Tokenizer.from_str(truncate(full_json, size))
    retrained = train_byte_level_bpe(TEXTS, size)
    assert truncated.get_vocab() == retrained.get_vocab()
    sample = TEXTS[:20]
    assert [e.ids for e in truncated.encode_batch(sample)] == [
        e.ids for e in retrained.encode_batch(sample)
    ]
    assert truncated.decode(truncated.encode(sample[0]).ids) == sample[0]  # byte-level: lossless


def test_chars_per_token_grows_with_size(full_json):
    _, held_out = _split(TEXTS)
    values = [_chars_per_token(truncate(full_json, v), held_out) for v in (300, 600, 1000, 1500)]
    assert values == sorted(values)


@pytest.mark.parametrize("tolerance", [0.03, 0.1])
def test_choice_is_the_smallest_size_within_tolerance(tolerance):
    choice = choose_vocab_size(TEXTS, 300, 3000, tolerance=tolerance)
    assert 300 <= choice.size <= 3000 and choice.max_size == 3000
    assert choice.chars_per_token >= (1 - tolerance) * choice.max_chars_per_token
    _, held_out = _split(TEXTS)
    # One token fewer falls outside the tolerance: the choice is minimal.
    smaller = _chars_per_token(truncate(choice.tokenizer_json, choice.size - 1), held_out)
    assert smaller < (1 - tolerance) * choice.max_chars_per_token
    assert vocabulary_size(choice.tokenizer_json) == choice.size
    assert "\n" not in choice.summary and f"vocab size {choice.size}" in choice.summary


def test_wider_tolerance_gives_a_smaller_vocabulary():
    tight = choose_vocab_size(TEXTS, 300, 3000, tolerance=0.01)
    loose = choose_vocab_size(TEXTS, 300, 3000, tolerance=0.2)
    assert loose.size < tight.size


def test_min_size_wins_when_already_within_tolerance():
    assert choose_vocab_size(TEXTS, 2500, 3000, tolerance=0.5).size == 2500


def test_sample_too_small_for_min_size():
    choice = choose_vocab_size(["tiny text, tiny text."] * 3, 1000, 5000)
    assert choice.size == 1000 and choice.max_size < 1000
    assert "the sample yields only" in choice.summary


def test_bad_arguments():
    with pytest.raises(ConfigError):
        choose_vocab_size(TEXTS, 100, 1000)
    with pytest.raises(ConfigError):
        choose_vocab_size(TEXTS, 2000, 1000)
    with pytest.raises(ConfigError):
        choose_vocab_size(TEXTS, 300, 1000, tolerance=1.5)
    with pytest.raises(DataError):
        choose_vocab_size(["", ""], 300, 1000)
