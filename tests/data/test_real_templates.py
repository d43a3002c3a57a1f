"""The families' real chat templates (``tests/data/templates``, as the Hub ships them): our
rendering equals transformers' ``apply_chat_template`` for single-turn, multi-turn, system, tool
and generation-prompt conversations, and the trained spans are exactly each assistant reply and
its turn end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kerastrain.data.chat_template import ChatTemplate

TEMPLATES = Path(__file__).parent / "templates"
TOKENS = json.loads((TEMPLATES / "tokens.json").read_text(encoding="utf-8"))
# The marker each family closes an assistant turn with (what its generation stops at).
TURN_END = {
    "meta-llama-Llama-3.1-8B-Instruct": "<|eot_id|>",
    "Qwen-Qwen2.5-7B-Instruct": "<|im_end|>",
    "Qwen-Qwen3-0.6B": "<|im_end|>",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": "<｜end▁of▁sentence｜>",
    "google-gemma-2-2b-it": "<end_of_turn>",
    "microsoft-Phi-3.5-mini-instruct": "<|end|>",
    "mistralai-Mistral-Nemo-Instruct-2407": "</s>",
    "HuggingFaceTB-SmolLM2-1.7B-Instruct": "<|im_end|>",
    "microsoft-phi-4": "<|im_end|>",
}
NO_SYSTEM = {"google-gemma-2-2b-it"}  # its template refuses a system message

ONE = [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "It is 5."}]
MULTI = [*ONE, {"role": "user", "content": "And 4+4?"},
         {"role": "assistant", "content": "8, since 4 doubled is 8."}]
SYSTEM = [{"role": "system", "content": "Answer in one line."}, *MULTI]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "18 C, sunny", "tool_call_id": "call_1"},
    {"role": "assistant", "content": "It is 18 C and sunny in Paris."},
]


def _template(name: str, **kwargs) -> ChatTemplate:
    return ChatTemplate((TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8"), name,
                        TOKENS[name], kwargs)


def _transformers(name: str):
    """A transformers tokenizer with the family's special tokens and template (its vocabulary
    is irrelevant to the rendered text)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokens = TOKENS[name]
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.add_special_tokens(sorted(set(tokens.values())))
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=_template(name).source,
                                   **tokens)


def _theirs(name, messages, **kwargs) -> str:
    return _transformers(name).apply_chat_template(messages, tokenize=False, **kwargs)


@pytest.mark.parametrize("name", sorted(TURN_END))
def test_each_family_renders_as_transformers_and_trains_replies_with_their_turn_end(name):
    template = _template(name)
    assert template.turn_end == TURN_END[name]
    conversations = [ONE, MULTI] + ([] if name in NO_SYSTEM else [SYSTEM])
    for messages in conversations:
        text, spans = template.assistant_spans(messages)
        assert text == _theirs(name, messages)
        prompt = messages[:-1]
        assert template.render(prompt, add_generation_prompt=True) == _theirs(
            name, prompt, add_generation_prompt=True)
        trained = [text[a:b] for a, b in spans]
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        if name == "Qwen-Qwen3-0.6B":  # the last turn, as the model writes it: an empty thought
            replies[-1] = "<think>\n\n</think>\n\n" + replies[-1]
        assert trained == [r + TURN_END[name] for r in replies]


def test_qwen3_drops_earlier_reasoning_and_trains_each_turn_as_the_conversation_shows_it():
    """Qwen 3 renders the reasoning of the turns after the last user message only: earlier
    turns are trained as the whole conversation renders them (without their reasoning), the
    last with it. With enable_thinking=false the empty thought is the prompt's, not trained."""
    name = "Qwen-Qwen3-0.6B"
    messages = [
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "content": "5", "reasoning_content": "Two plus three."},
        {"role": "user", "content": "4+4?"},
        {"role": "assistant", "content": "8", "reasoning_content": "Four doubled."},
    ]
    template = _template(name)
    text, spans = template.assistant_spans(messages)
    assert text == _theirs(name, messages)
    assert "Two plus three." not in text  # the template dropped it
    assert [text[a:b] for a, b in spans] == [
        "5<|im_end|>", "<think>\nFour doubled.\n</think>\n\n8<|im_end|>"]
    quiet = _template(name, enable_thinking=False)
    plain = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
    text, spans = quiet.assistant_spans(plain)
    assert text == _theirs(name, plain, enable_thinking=False)
    assert quiet.render(plain[:3], add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert quiet.render(plain[:3], add_generation_prompt=True) == _theirs(
        name, plain[:3], add_generation_prompt=True, enable_thinking=False)
    assert [text[a:b] for a, b in spans] == ["5<|im_end|>", "8<|im_end|>"]


@pytest.mark.parametrize("name, call", [
    ("meta-llama-Llama-3.1-8B-Instruct",
     '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>'),
    ("Qwen-Qwen2.5-7B-Instruct",
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
     '<|im_end|>'),
])
def test_tool_calls_are_trained_and_tool_results_are_not(name, call):
    template = _template(name)
    text, spans = template.assistant_spans(TOOL_CHAT, tools=[WEATHER])
    assert text == _theirs(name, TOOL_CHAT, tools=[WEATHER])
    assert "get_weather" in text[: spans[0][0]]  # the tools' schemas: in the prompt
    trained = [text[a:b] for a, b in spans]
    assert trained == [call, "It is 18 C and sunny in Paris." + TURN_END[name]]
    result = text.index("18 C, sunny")
    assert not any(a <= result < b for a, b in spans)


def test_a_chat_record_brings_its_tools_and_openai_string_arguments():
    """A record's ``tools`` (here a JSON string, as a Parquet column holds it) reach the template,
    and OpenAI's JSON-string ``arguments`` are the object templates expect."""
    from kerastrain.data.formats import ChatFormat, FormatContext

    name = "Qwen-Qwen2.5-7B-Instruct"
    openai = json.loads(json.dumps(TOOL_CHAT))
    openai[1]["content"] = None
    openai[1]["tool_calls"][0]["function"]["arguments"] = '{"city": "Paris"}'
    record = {"messages": openai, "tools": json.dumps([WEATHER])}
    context = FormatContext(template=_template(name))
    assert ChatFormat().text(record, context) == _theirs(name, TOOL_CHAT, tools=[WEATHER])


def test_documents_and_template_kwargs_reach_the_template_as_in_transformers():
    """A record's ``documents`` (retrieval-augmented templates, e.g. Command R's) and
    --chat-template-kwargs are template variables, as apply_chat_template's arguments are."""
    from kerastrain.data.chat_template import CHATML
    from kerastrain.data.formats import ChatFormat, FormatContext

    source = ("{% for d in documents or [] %}{{ d['title'] }}: {{ d['text'] }}\n{% endfor %}"
              "{{ greeting }}\n" + CHATML)
    name = "Qwen-Qwen2.5-7B-Instruct"
    template = ChatTemplate(source, "rag", TOKENS[name], {"greeting": "Hello"})
    documents = [{"title": "Weather", "text": "Paris: 18 C"}]
    record = {"messages": ONE, "documents": documents}
    text = ChatFormat().text(record, FormatContext(template=template))
    theirs = _transformers(name)
    assert text == theirs.apply_chat_template(ONE, documents=documents, chat_template=source,
                                              tokenize=False, greeting="Hello")
    assert text.startswith("Weather: Paris: 18 C\nHello\n<|im_start|>user")


def test_deepseek_r1_drops_every_turns_reasoning_and_trains_the_answers():
    """DeepSeek R1's template keeps only what follows ``</think>`` of every assistant turn, and
    its generation prompt opens a thought the conversation's text does not have: each turn trains
    its answer and turn end, as the template renders it."""
    name = "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"
    messages = [{"role": "user", "content": "2+3?"},
                {"role": "assistant", "content": "<think>\nTwo plus three.\n</think>\n\n5"},
                {"role": "user", "content": "4+4?"},
                {"role": "assistant", "content": "<think>\nFour doubled.\n</think>\n\n8"}]
    template = _template(name)
    text, spans = template.assistant_spans(messages)
    assert text == _theirs(name, messages)
    assert template.render(messages[:3], add_generation_prompt=True).endswith("<think>\n")
    end = TURN_END[name]
    assert [text[a:b] for a, b in spans] == [f"\n\n5{end}", f"\n\n8{end}"]


def test_the_smollm2_transcription_renders_what_the_hubs_template_renders():
    """The prompt the Hub's SmolLM2 template gives (as rendered from the Hub by another project's
    generated fixtures) for a multi-turn conversation without a system message."""
    messages = [{"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "Four."},
                {"role": "user", "content": "And 3+3?"}]
    expected = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                "<|im_start|>assistant\nFour.<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n"
                "<|im_start|>assistant\n")
    name = "HuggingFaceTB-SmolLM2-1.7B-Instruct"
    assert _template(name).render(messages, add_generation_prompt=True) == expected
