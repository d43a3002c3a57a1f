"""Data formats and chat templates: which tokens a conversation or prompt-completion record
trains, the text transformers would render, and one line for each kind of bad record."""

from __future__ import annotations

import pytest

from kerastrain.data.chat_template import CHATML, ChatTemplate, load_chat_template
from kerastrain.data.formats import FormatContext, choose_format
from kerastrain.data.tokenizer import ByteTokenizer
from kerastrain.errors import ConfigError, DataError

CHAT = {"messages": [
    {"role": "system", "content": "Add."},
    {"role": "user", "content": "2+3?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "4+4?"},
    {"role": "assistant", "content": "8"},
]}
SHAREGPT = {"conversations": [
    {"from": "system", "value": "Add."}, {"from": "human", "value": "2+3?"},
    {"from": "gpt", "value": "5"}, {"from": "human", "value": "4+4?"},
    {"from": "gpt", "value": "8"},
]}
# Llama 3's chat template as its tokenizer_config.json ships it (abridged of tools): a template
# written for transformers, with bos_token as a variable.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)


def _context(template=None, **kw):
    return FormatContext(tokenizer=ByteTokenizer(), template=template or ChatTemplate(CHATML), **kw)


def _trained_text(example) -> str:
    """The text of the trained tokens (mask set), turns joined with '|'."""
    out, previous = [], False
    for token, trained in zip(example.ids, example.mask, strict=True):
        if trained and not previous and out:
            out.append(ord("|"))
        if trained:
            out.append(token)
        previous = trained
    return bytes(out).decode()


def test_chat_trains_every_assistant_turn_and_nothing_else():
    fmt = choose_format("auto", CHAT, _context())
    assert fmt.name == "chat"
    (example,) = fmt.encode([CHAT], _context())
    text = bytes(example.ids).decode()
    assert text == ("<|im_start|>system\nAdd.<|im_end|>\n<|im_start|>user\n2+3?<|im_end|>\n"
                    "<|im_start|>assistant\n5<|im_end|>\n<|im_start|>user\n4+4?<|im_end|>\n"
                    "<|im_start|>assistant\n8<|im_end|>\n")
    # Each reply and its turn end, where generation stops: not ChatML's newline after it.
    assert _trained_text(example) == "5<|im_end|>|8<|im_end|>"
    # ShareGPT's form is the same conversation: the same ids and mask.
    (same,) = fmt.encode([SHAREGPT], _context())
    assert (same.ids, same.mask) == (example.ids, example.mask)
    # --train-on-prompt: every token.
    (every,) = fmt.encode([CHAT], _context(train_on_prompt=True))
    assert every.ids == example.ids and every.mask is None


def test_a_transformers_template_with_variables_splits_by_prefixes():
    template = ChatTemplate(LLAMA3, "llama3", {"bos_token": "<|begin_of_text|>"})
    (example,) = choose_format("chat", CHAT, _context(template)).encode([CHAT], _context(template))
    assert bytes(example.ids).decode().startswith("<|begin_of_text|><|start_header_id|>system")
    assert _trained_text(example) == "5<|eot_id|>|8<|eot_id|>"


def test_bpe_ids_are_those_of_the_whole_text_and_chatml_markers_are_one_token():
    from kerastrain.data.tokenizer import BPETokenizer, train_byte_level_bpe

    tok = BPETokenizer(train_byte_level_bpe(["2+3? 5 4+4? 8 Add."] * 20, 280))
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    context = FormatContext(tokenizer=tok, template=ChatTemplate(CHATML))
    (example,) = choose_format("chat", CHAT, context).encode([CHAT], context)
    text = ChatTemplate(CHATML).render(CHAT["messages"])
    # What apply_chat_template gives: the rendered text tokenized whole, no special tokens added.
    assert example.ids == tok.encode_batch([text])[0]
    assert example.ids.count(tok.hf.token_to_id("<|im_start|>")) == 5
    trained = tok.hf.decode([t for t, m in zip(example.ids, example.mask, strict=True) if m],
                            skip_special_tokens=False)
    assert trained == "5<|im_end|>8<|im_end|>"


def test_prompt_completion_and_alpaca_train_the_completion_and_eos():
    context = _context()
    record = {"prompt": "Q: 2+3? A: ", "completion": "5"}
    fmt = choose_format("auto", record, context)
    assert fmt.name == "prompt-completion"
    (example,) = fmt.encode([record], context)
    assert example.ids == [*b"Q: 2+3? A: 5", 256]
    assert example.mask == [False] * 11 + [True, True]
    alpaca = {"instruction": "Add 2 and 3", "input": "", "output": "5"}
    (example,) = fmt.encode([alpaca], context)
    assert bytes(example.ids[:-1]).decode() == "### Instruction:\nAdd 2 and 3\n\n### Response:\n5"
    assert sum(example.mask) == 2


def test_auto_picks_text_for_plain_strings_and_text_records():
    assert choose_format("auto", "plain text", _context()).name == "text"
    assert choose_format("auto", {"text": "t", "id": 1}, _context()).name == "text"


@pytest.mark.parametrize("record, data_format, message", [
    ({"question": "q", "answer": "a"}, "auto",
     "no installed data format reads the first record (columns found: answer, question)"),
    ({"prompt": "p", "completion": "c"}, "chat",
     "a record has no messages, conversations or prompt/completion message lists column for "
     "--data-format chat (columns found: completion, prompt); --data-format prompt-completion "
     "fits it"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "chat", "unknown role 'robot'"),
    ({"messages": ["hello", {"role": "user", "content": "x"}]}, "chat",
     'a message is not JSON in the record {"messages": ["hello"'),
    ({"messages": [[1], {"role": "user", "content": "x"}]}, "chat",
     "a message is not an object in the record"),
    ({"messages": [{"role": "user", "content": "x"}]}, "chat",
     'a conversation has no assistant turn, so no trained token: {"messages": [{"role": "user"'),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
     "chat", "a conversation's assistant turns are all empty: {"),
    ({"prompt": "Say hi", "completion": ""}, "prompt-completion",
     'a record\'s completion is empty, so no trained token: {"prompt": "Say hi"'),
    ({"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "user",
                                                                     "content": "x"}]},
     "auto", "a conversation has no assistant turn"),
    ({"prompt": [{"role": "user", "content": "hi"}], "completion": "hello"}, "auto",
     "a record's prompt and completion must both be message lists (chat) or both text: {"),
])
def test_bad_records_are_one_line(record, data_format, message):
    import re

    with pytest.raises(DataError, match="^" + re.escape(message)):
        fmt = choose_format(data_format, record, _context())
        fmt.text(record, _context())


def test_a_template_that_fails_to_render_gives_its_message(tmp_path):
    path = tmp_path / "strict.jinja"
    path.write_text("{% if messages[0]['role'] != 'user' %}"
                    "{{ raise_exception('Conversations must start with the user') }}{% endif %}"
                    "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    template = load_chat_template(path)
    fmt = choose_format("chat", CHAT, _context(template))
    with pytest.raises(DataError, match="failed to render a conversation: Conversations must "
                                        "start with the user"):
        fmt.text(CHAT, _context(template))
    path.write_text("{% for m in messages %}")
    with pytest.raises(ConfigError, match="does not parse"):
        load_chat_template(path)


def test_a_model_folders_template_and_its_special_tokens(tmp_path):
    import json

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": LLAMA3, "bos_token": {"content": "<|begin_of_text|>"}}))
    template = load_chat_template(model_folder=tmp_path)
    assert template.variables["bos_token"] == "<|begin_of_text|>"
    assert template.render(CHAT["messages"][:2], add_generation_prompt=True).endswith(
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="has no chat_template"):
        load_chat_template(model_folder=tmp_path)


def test_conversational_prompt_completion_trains_the_completion_and_mixes_with_other_shapes():
    """TRL's conversational prompt/completion: the same text as the whole conversation, only the
    completion's turns trained; records of every chat shape may share one file."""
    conversational = {"prompt": CHAT["messages"][:4], "completion": CHAT["messages"][4:]}
    fmt = choose_format("auto", conversational, _context())
    assert fmt.name == "chat"
    mixed = fmt.encode([conversational, SHAREGPT, CHAT], _context())
    assert [bytes(e.ids) for e in mixed] == [bytes(mixed[2].ids)] * 3
    assert _trained_text(mixed[0]) == "8<|im_end|>"  # the prompt's reply "5" is not trained
    assert _trained_text(mixed[1]) == _trained_text(mixed[2]) == "5<|im_end|>|8<|im_end|>"


def test_a_reply_may_repeat_the_next_message_and_a_turn_without_its_end_is_one_line():
    """The turn's end is found in the turn: a reply that contains the next user message is no
    error; a template that closes only the last assistant turn is refused in one line, not
    trained across the next user turn."""
    chat = {"messages": [{"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hi. Say Thanks"},
                         {"role": "user", "content": "Thanks"},
                         {"role": "assistant", "content": "Welcome"}]}
    (example,) = choose_format("chat", chat, _context()).encode([chat], _context())
    assert _trained_text(example) == "Hi. Say Thanks<|im_end|>|Welcome<|im_end|>"
    odd = ChatTemplate("{% for m in messages %}{{ m['role'] + ':' + m['content'] }}"
                       "{% if m['role'] == 'user' or loop.last %}<|end|>{% endif %}{% endfor %}"
                       "{% if add_generation_prompt %}assistant:{% endif %}", "odd")
    with pytest.raises(DataError, match="does not render assistant turn 1 of a conversation "
                                        "followed by its turn end"):
        odd.assistant_spans(chat["messages"])
