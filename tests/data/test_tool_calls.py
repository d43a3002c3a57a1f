"""Tool calls read back from a reply: what each family's real template writes for an assistant's
``tool_calls`` (the text a model fine-tuned on it learns to write) parses to the same calls."""

from __future__ import annotations

import json

import pytest

from kerastrain.data.tool_calls import ToolCall, parse_tool_calls
from tests.data.test_real_templates import TOOL_CHAT, TURN_END, WEATHER, _template, _tool_chat

PARIS = ToolCall("get_weather", {"city": "Paris"})
TWO = [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": c}},
        "id": i} for c, i in (("Paris", "abcDEF123"), ("Oslo", "ghiJKL456"))]


def _written(name, messages, kwargs=None) -> str:
    """The first trained span of ``messages`` without its turn end: what the model writes."""
    text, spans = _template(name, **(kwargs or {})).assistant_spans(messages, tools=[WEATHER])
    a, b = spans[0]
    return text[a:b].removesuffix(TURN_END[name])


@pytest.mark.parametrize("name, messages, calls", [
    ("meta-llama-Llama-3.1-8B-Instruct", TOOL_CHAT, [PARIS]),
    ("Qwen-Qwen2.5-7B-Instruct", TOOL_CHAT, [PARIS]),
    ("Qwen-Qwen3-0.6B", _tool_chat(content=""), [PARIS]),
    ("mistralai-Mistral-7B-Instruct-v0.3", _tool_chat(call_id="abcDEF123"),
     [ToolCall("get_weather", {"city": "Paris"}, "abcDEF123")]),
])
def test_the_calls_a_template_writes_parse_back(name, messages, calls):
    assert parse_tool_calls(_written(name, messages)) == ("", calls)


@pytest.mark.parametrize("name", ["Qwen-Qwen2.5-7B-Instruct", "mistralai-Mistral-7B-Instruct-v0.3"])
def test_several_calls_in_one_reply_parse_in_order(name):
    messages = [{"role": "user", "content": "Weather in Paris and Oslo?"},
                {"role": "assistant", "content": "", "tool_calls": TWO}]
    calls = parse_tool_calls(_written(name, messages))[1]
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    if name.startswith("mistralai"):
        assert [c.id for c in calls] == ["abcDEF123", "ghiJKL456"]


def test_text_around_calls_stays_and_broken_markup_is_not_a_call():
    reply = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n' \
            "</tool_call>"
    assert parse_tool_calls(reply) == ("Let me check.", [PARIS])
    broken = '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>'
    assert parse_tool_calls(broken) == (broken, [])
    assert parse_tool_calls("It is 18 C.") == ("It is 18 C.", [])
    assert parse_tool_calls('{"answer": 5}') == ('{"answer": 5}', [])  # JSON, not a call
    llama = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'
    assert parse_tool_calls(llama) == ("", [PARIS])
    openai = json.dumps({"function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}})
    assert parse_tool_calls(f"<tool_call>{openai}</tool_call>") == ("", [PARIS])
    assert str(PARIS) == 'get_weather({"city": "Paris"})'
