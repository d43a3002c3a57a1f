"""The families' real chat templates (``tests/data/templates``, as the Hub ships them): our
rendering equals transformers' ``apply_chat_template`` for single-turn, multi-turn, system, tool
and generation-prompt conversations, and the trained spans are exactly each assistant reply and
its turn end."""

from __future__ import annotations

import json
import re
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
    "google-gemma-3-4b-it": "<end_of_turn>",
    "HuggingFaceTB-SmolLM3-3B": "<|im_end|>",
    "mistralai-Mistral-7B-Instruct-v0.3": "</s>",
    "teknium-OpenHermes-2.5-Mistral-7B": "<|im_end|>",
}
NO_SYSTEM = {"google-gemma-2-2b-it"}  # its template refuses a system message
# What a family writes before every reply beyond its generation prompt: the model writes it too.
LEAD = {"mistralai-Mistral-7B-Instruct-v0.3": " "}

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
        replies = [LEAD.get(name, "") + m["content"] for m in messages
                   if m["role"] == "assistant"]
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


QWEN_CALL = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
             '<|im_end|>')
ANSWER = "It is 18 C and sunny in Paris."


def _tool_chat(content=None, call_id=None) -> list[dict]:
    """TOOL_CHAT with the tool call's ``content`` (Qwen 3's template reads it: "" as Qwen's own
    examples give) and a call id (Mistral's template wants 9 characters)."""
    messages = json.loads(json.dumps(TOOL_CHAT))
    if content is not None:
        messages[1]["content"] = content
    if call_id is not None:
        messages[1]["tool_calls"][0]["id"] = messages[2]["tool_call_id"] = call_id
    return messages


@pytest.mark.parametrize("name, kwargs, messages, trained", [
    ("meta-llama-Llama-3.1-8B-Instruct", {}, TOOL_CHAT,
     ['{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>',
      ANSWER + "<|eot_id|>"]),
    ("Qwen-Qwen2.5-7B-Instruct", {}, TOOL_CHAT, [QWEN_CALL, ANSWER + "<|im_end|>"]),
    # Qwen 3: the call is an earlier turn (no thought), the answer the last (an empty one) ...
    ("Qwen-Qwen3-0.6B", {}, _tool_chat(content=""),
     [QWEN_CALL, "<think>\n\n</think>\n\n" + ANSWER + "<|im_end|>"]),
    # ... without thinking, the empty thought is the generation prompt's: the call is trained
    # from its first character although the prompt's "<think>" shares its "<t".
    ("Qwen-Qwen3-0.6B", {"enable_thinking": False}, _tool_chat(content=""),
     [QWEN_CALL, ANSWER + "<|im_end|>"]),
    ("mistralai-Mistral-7B-Instruct-v0.3", {}, _tool_chat(call_id="abcDEF123"),
     ['[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, '
      '"id": "abcDEF123"}]</s>', " " + ANSWER + "</s>"]),
])
def test_tool_calls_are_trained_and_tool_results_are_not(name, kwargs, messages, trained):
    template = _template(name, **kwargs)
    text, spans = template.assistant_spans(messages, tools=[WEATHER])
    assert text == _theirs(name, messages, tools=[WEATHER], **kwargs)
    assert "get_weather" in text[: spans[0][0]]  # the tools' schemas: in the prompt
    assert [text[a:b] for a, b in spans] == trained
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


SMOLLM3 = "HuggingFaceTB-SmolLM3-3B"
THINK_DEFAULT = (  # SmolLM3's system text in /think mode, as the Hub's fixtures quote it
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an "
    "assistant involves thoroughly exploring questions through a systematic thinking process "
    "before providing the final precise and accurate solutions. This requires engaging in a "
    "comprehensive cycle of analysis, summarizing, exploration, reassessment, reflection, "
    "backtracking, and iteration to develop well-considered thinking process. Please structure "
    "your response into two main sections: Thought and Solution using the specified format: "
    "<think> Thought section </think> Solution section. In the Thought section, detail your "
    "reasoning process in steps. Each step should include detailed considerations such as "
    "analysing questions, summarizing relevant findings, brainstorming new ideas, verifying the "
    "accuracy of the current steps, refining any errors, and revisiting previous steps. In the "
    "Solution section, based on various attempts, explorations, and reflections from the "
    "Thought section, systematically present the final solution that you deem correct. The "
    "Solution section should be logical, accurate, and concise and detail necessary steps "
    "needed to reach the conclusion.\n\n")


@pytest.mark.parametrize("kwargs, system", [
    ({}, None), ({"enable_thinking": False}, None), ({}, "Be brief. /no_think"),
    ({"enable_thinking": False}, "Be brief. /think")])
def test_smollm3_thinking_modes_render_as_transformers_and_train_the_replies(kwargs, system):
    """SmolLM3 chooses /think or /no_think from enable_thinking, overridden by a flag in the
    system message; without thinking, every turn and the generation prompt carry an empty
    thought, which is the prompt's (not trained). With thinking, a reply's own thought (in its
    content, as SmolLM3's template takes it) is trained with it."""
    thought = "<think>\nTwo plus three.\n</think>\n"
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": "2+3?"}, {"role": "assistant", "content": thought + "5"},
        {"role": "user", "content": "4+4?"}, {"role": "assistant", "content": "8"}]
    thinking = "/think" in (system or "") or (kwargs.get("enable_thinking", True)
                                              and "/no_think" not in (system or ""))
    template = _template(SMOLLM3, **kwargs)
    text, spans = template.assistant_spans(messages)
    assert text == _theirs(SMOLLM3, messages, **kwargs)
    prompt = template.render(messages[:-1], add_generation_prompt=True)
    assert prompt == _theirs(SMOLLM3, messages[:-1], add_generation_prompt=True, **kwargs)
    assert f"Reasoning Mode: {'/think' if thinking else '/no_think'}\n" in text
    assert prompt.endswith("assistant\n" if thinking else "assistant\n<think>\n\n</think>\n")
    assert [text[a:b] for a, b in spans] == [thought + "5<|im_end|>", "8<|im_end|>"]


def test_smollm3_tool_calls_through_its_xml_tools_are_trained_and_results_are_not():
    """SmolLM3's template lists tools given as ``xml_tools`` (a --chat-template-kwargs value),
    takes a tool call as the reply's text and a tool result as a user turn."""
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": call},
                {"role": "tool", "content": "18 C, sunny"},
                {"role": "assistant", "content": ANSWER}]
    template = _template(SMOLLM3, xml_tools=[WEATHER])
    text, spans = template.assistant_spans(messages)
    assert text == _theirs(SMOLLM3, messages, xml_tools=[WEATHER])
    assert "### Tools" in text[: spans[0][0]] and "get_weather" in text[: spans[0][0]]
    assert [text[a:b] for a, b in spans] == [call + "<|im_end|>", ANSWER + "<|im_end|>"]
    result = text.index("18 C, sunny")
    assert not any(a <= result < b for a, b in spans)


def test_the_smollm3_transcription_renders_what_the_hubs_template_renders():
    """Prompts the Hub's SmolLM3 template gives (another project's fixtures generated from the
    Hub, dated 29 August 2026): no system message closes its header without an ``<|im_end|>``
    unless tools are listed, as the Hub's template does."""
    header = ("<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\n"
              "Today Date: 29 August 2026\nReasoning Mode: {mode}\n\n## Custom Instructions\n\n")
    question = "<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n"
    ask = [{"role": "user", "content": "What is the capital of Japan?"}]
    terse = [{"role": "system", "content": "You are a terse assistant."}]
    override = [{"role": "system", "content": "You are a terse assistant. /system_override"}]
    search = {"type": "function", "function": {
        "name": "web_search", "description": "Search the web for current information.",
        "parameters": {"type": "object", "properties": {"query": {
            "type": "string", "description": "What to search for"}}, "required": ["query"]}}}
    tools_block = (
        "### Tools\n\nYou may call one or more functions to assist with the user query.\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n\n<tools>\n"
        + json.dumps(search) + "\n</tools>\n\nFor each function call, return a json object with "
        "function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n\n'
        "<|im_end|>\n")
    cases = [
        ({"enable_thinking": False}, ask, header.format(mode="/no_think") + "You are a helpful AI "
         "assistant named SmolLM, trained by Hugging Face.\n\n" + question
         + "<think>\n\n</think>\n"),
        ({}, terse + ask, header.format(mode="/think") + "You are a terse assistant.\n\n"
         + question),
        ({}, override + ask, "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n"
         + question),
        ({"xml_tools": [json.dumps(search)]}, ask,
         header.format(mode="/think") + THINK_DEFAULT + tools_block + question),
        ({}, [{"role": "user", "content": "What is 2+2?"},
              {"role": "assistant", "content": "Four."}, {"role": "user", "content": "And 3+3?"}],
         header.format(mode="/think") + THINK_DEFAULT + "<|im_start|>user\nWhat is 2+2?"
         "<|im_end|>\n<|im_start|>assistant\nFour.<|im_end|>\n<|im_start|>user\nAnd 3+3?"
         "<|im_end|>\n<|im_start|>assistant\n"),
    ]
    for kwargs, messages, expected in cases:
        ours = _template(SMOLLM3, **kwargs).render(messages, add_generation_prompt=True)
        assert re.sub(r"Today Date: [^\n]*", "Today Date: 29 August 2026", ours) == expected


def test_the_built_in_chatml_renders_as_the_plain_chatml_models_ship():
    from kerastrain.data.chat_template import CHATML

    name = "teknium-OpenHermes-2.5-Mistral-7B"
    for messages in (ONE, SYSTEM):
        assert ChatTemplate(CHATML).render(messages) == _theirs(name, messages)
        assert ChatTemplate(CHATML).render(messages[:-1], add_generation_prompt=True) == \
            _theirs(name, messages[:-1], add_generation_prompt=True)
