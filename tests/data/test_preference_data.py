"""Preference records in TRL's forms become pairs whose sides are what the chat and
prompt-completion formats make of the same conversation; the packer keeps pairs whole."""

from __future__ import annotations

import grain
import numpy as np
import pytest

from kerastrain.data.chat_template import CHATML, ChatTemplate
from kerastrain.data.examples import EncodeChunk
from kerastrain.data.formats import Example, FormatContext, choose_format
from kerastrain.data.packing import packed_rows
from kerastrain.data.preference_format import PairExample, shared_prefix
from kerastrain.data.tokenizer import ByteTokenizer
from kerastrain.errors import DataError

USER = {"role": "user", "content": "2+3?"}
GOOD = {"role": "assistant", "content": "5"}
BAD = {"role": "assistant", "content": "six"}


def _context():
    return FormatContext(tokenizer=ByteTokenizer(), template=ChatTemplate(CHATML))


def _encode(record):
    fmt = choose_format("auto", record, _context())
    assert fmt.name == "preference"
    (pair,) = fmt.encode([record], _context())
    return pair


def _trained(example) -> str:
    return bytes(t for t, m in zip(example.ids, example.mask, strict=True) if m and t < 256) \
        .decode()


def test_string_pairs_train_each_reply_and_eos_after_the_shared_prompt():
    pair = _encode({"prompt": "Q: 2+3? A:", "chosen": " 5", "rejected": " six"})
    eos = ByteTokenizer().eos_id
    assert pair.chosen.ids == [*b"Q: 2+3? A: 5", eos]
    assert pair.rejected.ids == [*b"Q: 2+3? A: six", eos]
    assert pair.chosen.mask == [False] * 10 + [True] * 3
    assert pair.prompt_len == 10
    # The same as the prompt-completion format makes of prompt + chosen.
    fmt = choose_format("prompt-completion", {"prompt": "Q: 2+3? A:", "completion": " 5"},
                        _context())
    (same,) = fmt.encode([{"prompt": "Q: 2+3? A:", "completion": " 5"}], _context())
    assert (same.ids, same.mask) == (pair.chosen.ids, pair.chosen.mask)


def test_conversational_pairs_are_the_chat_formats_conversations():
    pair = _encode({"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]})
    chat = choose_format("chat", {"messages": [USER, GOOD]}, _context())
    for side, reply in ((pair.chosen, GOOD), (pair.rejected, BAD)):
        (expected,) = chat.encode([{"messages": [USER, reply]}], _context())
        assert (side.ids, side.mask) == (expected.ids, expected.mask)
    assert _trained(pair.chosen) == "5<|im_end|>"
    assert bytes(pair.chosen.ids[:pair.prompt_len]).decode().endswith("<|im_start|>assistant\n")


def test_whole_conversations_sharing_a_prefix_give_the_explicit_prompts_pair():
    implicit = _encode({"chosen": [USER, GOOD], "rejected": [USER, BAD]})
    explicit = _encode({"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]})
    assert implicit == explicit


def test_the_shared_prefix_is_trls():
    # trl.data_utils.extract_prompt: a space before the first difference goes to the replies.
    assert shared_prefix("The sky is blue.", "The sky is green.") == len("The sky is")
    assert shared_prefix([USER, GOOD], [USER, BAD]) == 1
    pair = _encode({"chosen": "The sky is blue.", "rejected": "The sky is green."})
    assert _trained(pair.chosen) == " blue."


@pytest.mark.parametrize("record, says", [
    ({"prompt": "Q", "chosen": "a"}, "no rejected reply"),
    ({"prompt": "Q", "chosen": "", "rejected": "b"}, "no chosen reply"),
    ({"prompt": "Q", "chosen": "same", "rejected": "same"}, "identical"),
    ({"chosen": [USER, GOOD], "rejected": [USER, GOOD, USER]}, "chosen reply is empty"),
    ({"prompt": "Q", "chosen": "a", "rejected": [BAD]}, "both be text or both message lists"),
])
def test_a_bad_record_is_one_line_naming_it(record, says):
    fmt = choose_format("auto", record, _context())
    with pytest.raises(DataError) as err:
        fmt.text(record, _context())
    message = str(err.value)
    assert says in message and "\n" not in message
    assert '"chosen"' in message  # the record itself is shown


def _pair(prompt: int, chosen: int, rejected: int, start: int = 1) -> PairExample:
    p = list(range(start, start + prompt))
    c = list(range(100, 100 + chosen))
    r = list(range(200, 200 + rejected))
    return PairExample(Example(p + c, [False] * prompt + [True] * chosen),
                       Example(p + r, [False] * prompt + [True] * rejected), prompt)


def _packed(pairs, seq_len=16, several=True, overlong="truncate"):
    """``pairs`` through the pipeline's pieces and Grain's packer (a dataset of rows)."""
    encode = EncodeChunk(None, packed=True, seq_len=seq_len, overlong=overlong)
    elements = [{**piece, "epoch": np.int32(0)} for pair in pairs
                for piece in encode.pieces(pair, 0)]
    return packed_rows(grain.MapDataset.source(elements).to_iter_dataset(), seq_len, 0,
                       several=several)


def _rows(pairs, **kw):
    return list(_packed(pairs, **kw))


def test_pairs_share_rows_whole_with_two_segments_each():
    pairs = [_pair(3, 2, 4), _pair(2, 5, 1), _pair(4, 3, 3), _pair(1, 2, 2)]
    rows = _rows(pairs)
    placed = []
    for row in rows:
        segments = row["segments"]
        assert segments.max() % 2 == 0  # whole pairs only
        for s in range(1, segments.max() + 1, 2):
            chosen = row["inputs"][segments == s].tolist()
            rejected = row["inputs"][segments == s + 1].tolist()
            placed.append((chosen, rejected))
        assert row["counts"][0] == segments.max() // 2  # examples: the row's pairs
    assert placed == [(p.chosen.ids[:-1], p.rejected.ids[:-1]) for p in pairs]
    assert len(rows) < len(pairs)
    one_per_row = _rows(pairs, several=False)
    assert len(one_per_row) == len(pairs)
    assert all(row["segments"].max() == 2 for row in one_per_row)


def test_overlong_pairs_are_dropped_or_cut_keeping_the_prompts_end_and_the_replies_starts():
    long = _pair(10, 9, 12)  # 2 x 10 prompt + 21 reply tokens - 2 = 39 positions > 16
    (row,) = _rows([long], overlong="drop")
    assert row["counts"].tolist() == [0, 0, 1] and row["segments"].max() == 0
    (row,) = _rows([long], overlong="truncate")
    assert row["counts"].tolist() == [1, 1, 0]  # examples, truncated, dropped
    segments, inputs, labels = row["segments"], row["inputs"], row["labels"]
    chosen = inputs[segments == 1].tolist() + [labels[segments == 1][-1]]
    rejected = inputs[segments == 2].tolist() + [labels[segments == 2][-1]]
    assert len(chosen) - 1 + len(rejected) - 1 <= 16
    prompt = list(range(1, 11))
    kept = chosen[:chosen.index(100)]
    assert kept == prompt[-len(kept):] and len(kept) >= 4  # the prompt's end
    assert chosen[len(kept):] == list(range(100, 100 + len(chosen) - len(kept)))  # replies' starts
    assert rejected[len(kept):] == list(range(200, 200 + len(rejected) - len(kept)))
    assert rejected[:len(kept)] == kept


def test_the_packer_resumes_from_its_state():
    pairs = [_pair(3, 2, 4), _pair(2, 5, 1), _pair(4, 3, 3), _pair(1, 2, 2), _pair(2, 2, 2)] * 3
    whole = _rows(pairs)
    first = iter(_packed(pairs))
    rows = [next(first), next(first)]
    rest = iter(_packed(pairs))
    rest.set_state(first.get_state())
    rows += list(rest)
    assert len(rows) == len(whole) > 3
    for a, b in zip(rows, whole, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_only_message_pairs_need_the_chat_template():
    fmt = choose_format("preference", {"chosen": "a", "rejected": "b"}, _context())
    assert not fmt.needs_template_for({"prompt": "Q", "chosen": "a", "rejected": "b"})
    assert fmt.needs_template_for({"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]})
    no_template = FormatContext(tokenizer=ByteTokenizer())
    with pytest.raises(DataError, match="one form per dataset"):
        fmt.text({"chosen": [USER, GOOD], "rejected": [USER, BAD]}, no_template)
