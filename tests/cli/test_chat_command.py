"""``kerastrain chat`` and ``generate --chat``: the template the model was trained with, the
history, ``/reset``, streamed replies that are the greedy decode of the rendered prompt."""

from __future__ import annotations

import pytest

from kerastrain.model.decoder import generate_ids, make_sampler
from tests.helpers import TINY, invoke
from tests.training.test_chat_training import _chat_file

BPE = ["--tokenizer", "bpe", "--vocab-size", "320", "--seq-len", "64"]
REPLY = ["--temperature", "0", "--max-new-tokens", "12"]


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    out = root / "out"
    result = invoke("run", "--output-dir", str(out), *TINY, *BPE, "--max-steps", "6",
                    "--dataset-id", str(_chat_file(root / "chat.jsonl")), "--eval-every", "1000")
    assert result.exit_code == 0, result.output
    return out


def test_chat_keeps_history_resets_and_replies_with_the_greedy_decode(chat_run):
    from kerastrain.model.chat import Conversation
    from kerastrain.model.loading import chat_template_of, load

    # The template travels with every checkpoint, special tokens included.
    assert (chat_run / "final_checkpoint" / "chat_template.json").is_file()
    template = chat_template_of(chat_run / "final_checkpoint")
    assert template.is_chatml
    model, tokenizer = load(chat_run)
    conversation = Conversation(model, tokenizer, template, make_sampler(temperature=0),
                                max_new_tokens=12)
    im_end = tokenizer.encode_batch(["<|im_end|>"])[0]
    assert len(im_end) == 1 and conversation.stops[0] == im_end[0]  # a turn ends at the marker
    first = "".join(conversation.reply("What is 3 plus 3?"))
    # The reply is the greedy continuation of the rendered prompt, cut at the turn's end.
    prompt = tokenizer.encode_batch([template.render(
        [{"role": "user", "content": "What is 3 plus 3?"}], add_generation_prompt=True)])[0]
    ids = generate_ids(model, prompt, 12, make_sampler(temperature=0), conversation.stops)
    assert first == tokenizer.decode([i for i in ids if i not in conversation.stops])
    second = "".join(conversation.reply("Thanks"))
    assert [m["role"] for m in conversation.messages] == ["user", "assistant"] * 2
    assert [m["content"] for m in conversation.messages[1::2]] == [first, second]  # replies kept

    # The command, with a seeded sampler, says what the same conversation says in-process.
    sampled = Conversation(model, tokenizer, template, make_sampler(0.9, seed=4), max_new_tokens=12)
    expected = ["".join(sampled.reply("What is 3 plus 3?")), "".join(sampled.reply("Thanks"))]
    sampled.reset()
    assert sampled.messages == []
    expected.append("".join(sampled.reply("What is 3 plus 3?")))
    typed = "What is 3 plus 3?\nThanks\n/reset\nWhat is 3 plus 3?\n/exit\nnever read\n"
    result = invoke("chat", str(chat_run), "--temperature", "0.9", "--seed", "4",
                    "--max-new-tokens", "12", input=typed)
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(f"{reply}\n" for reply in expected)
    assert len(set(expected)) > 1  # sampled replies differ: the comparison is not trivial
    one = invoke("generate", str(chat_run), "--chat", "--prompt", "What is 3 plus 3?", *REPLY)
    assert one.exit_code == 0 and one.stdout == first + "\n"


def test_a_plain_text_model_has_no_chat(tmp_path):
    out = tmp_path / "out"
    assert invoke("run", "--output-dir", str(out), *TINY, "--max-steps", "1").exit_code == 0
    from click.testing import CliRunner

    from kerastrain.cli import cli

    result = CliRunner().invoke(cli, ["chat", str(out)], input="hi\n")
    assert result.exit_code == 2
    assert "has no chat template" in result.output and "Traceback" not in result.output


def test_export_writes_the_template_that_renders_the_trained_ids(chat_run, tmp_path):
    """transformers' own apply_chat_template on the exported folder gives the ids the run
    trained on, and generation stops at the turn's end."""
    import json

    from transformers import AutoTokenizer

    from kerastrain.data.formats import ChatFormat, FormatContext
    from kerastrain.model.loading import chat_template_of, load

    target = tmp_path / "hf"
    result = invoke("export", str(chat_run), "--to", str(target))
    assert result.exit_code == 0, result.output
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 2 plus 2?"},
                {"role": "assistant", "content": "4."}]
    ids = AutoTokenizer.from_pretrained(str(target)).apply_chat_template(
        messages, tokenize=True, return_dict=False)
    _, tokenizer = load(chat_run)
    context = FormatContext(tokenizer=tokenizer, template=chat_template_of(chat_run))
    trained = ChatFormat().encode([{"messages": messages}], context)[0]
    assert ids == trained.ids and any(trained.mask) and not all(trained.mask)
    # transformers and vLLM stop a reply at the turn's end marker, not only at EOS.
    generation = json.loads((target / "generation_config.json").read_text())
    im_end = tokenizer.encode_batch(["<|im_end|>"])[0]
    assert generation["eos_token_id"] == [tokenizer.eos_id, *im_end]


@pytest.mark.slow
def test_chat_prints_the_tool_calls_a_model_makes_and_answers_them_with_tool(tmp_path):
    """A model fine-tuned on tool-calling conversations rendered by Qwen 2.5's real template
    writes the call's markup; ``kerastrain chat --tools`` shows the reply, then the call it
    reads there, labelled; ``/tool RESULT`` sends the result and the model answers it."""
    import json
    from pathlib import Path

    from kerastrain.data.tool_calls import parse_tool_calls
    from tests.data.test_real_templates import WEATHER

    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    record = {"messages": [{"role": "user", "content": "Weather in Paris?"},
                           {"role": "assistant", "content": "", "tool_calls": [call]},
                           {"role": "tool", "content": "18 C", "tool_call_id": "get_weather"},
                           {"role": "assistant", "content": "It is 18 C."}],
              "tools": [WEATHER]}
    data = tmp_path / "tools.jsonl"
    data.write_text((json.dumps(record) + "\n") * 120)
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([WEATHER]))
    qwen = Path(__file__).parents[1] / "data" / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja"
    out = tmp_path / "out"
    result = invoke("run", "--output-dir", str(out), *TINY, "--d-model", "64", "--tokenizer",
                    "bpe", "--vocab-size", "512", "--seq-len", "384", "--max-steps", "100",
                    "--dataset-id", str(data), "--eval-every", "1000", "--chat-template", str(qwen))
    assert result.exit_code == 0, result.output
    chat = invoke("chat", str(out), "--tools", str(tools), *REPLY[:2], "--max-new-tokens", "40",
                  input="Weather in Paris?\n/tool 18 C\n")
    assert chat.exit_code == 0, chat.output
    written = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert parse_tool_calls(written)[1][0].arguments == {"city": "Paris"}
    assert chat.stdout == (f'{written}\n[tool call] get_weather({{"city": "Paris"}})\n'
                           "It is 18 C.\n")
    early = invoke("chat", str(out), "--tools", str(tools), input="/tool 18 C\n")
    assert early.stdout == "" and "(no tool call to answer)" in early.stderr
    tools.write_text('{"name": "get_weather"}')
    from click.testing import CliRunner

    from kerastrain.cli import cli

    bad = CliRunner().invoke(cli, ["chat", str(out), "--tools", str(tools)], input="hi\n")
    assert bad.exit_code == 2 and "expected a JSON list of function schemas" in bad.output
    assert "Traceback" not in bad.output
