"""Turn ends on real runs: whatever the template (a Llama 3.1 file, the built-in ChatML) and
whether the tokenizer is trained now or reused from a pretraining checkpoint, the turn-end marker
is one token, trained at the end of every assistant turn, and what the exported
``generation_config.json`` stops at; transformers' own ``apply_chat_template`` on the exported
folder gives the ids trained on, for every conversation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import TINY, invoke
from tests.training.test_chat_training import _chat_file

LLAMA31 = Path(__file__).parents[1] / "data" / "templates" / "meta-llama-Llama-3.1-8B-Instruct.jinja"
BPE = ["--tokenizer", "bpe", "--vocab-size", "320", "--seq-len", "128", "--eval-every", "1000"]


def _conversations(n: int) -> list[list[dict]]:
    """Single- and multi-turn conversations, some with a system message."""
    out = []
    for i in range(n):
        messages = [{"role": "user", "content": f"What is {i} plus {i % 7}?"},
                    {"role": "assistant", "content": f"{i + i % 7}."}]
        if i % 2:
            messages += [{"role": "user", "content": "Thanks!"},
                         {"role": "assistant", "content": "You are welcome."}]
        if i % 3 == 0:
            messages.insert(0, {"role": "system", "content": "Answer briefly."})
        out.append(messages)
    return out


def _trained_and_exported(tmp_path, out: Path, conversations, *template_args) -> tuple:
    """(our tokenizer, the exported folder read by transformers, the examples trained on)."""
    from transformers import AutoTokenizer

    from kerastrain.data.formats import ChatFormat, FormatContext
    from kerastrain.model.loading import chat_template_of, load

    target = tmp_path / f"{out.name}-hf"
    result = invoke("export", str(out), "--to", str(target))
    assert result.exit_code == 0, result.output
    _, tokenizer = load(out)
    context = FormatContext(tokenizer=tokenizer, template=chat_template_of(out))
    examples = ChatFormat().encode([{"messages": m} for m in conversations], context)
    return tokenizer, AutoTokenizer.from_pretrained(str(target)), examples, target


def _check_turn_ends(tokenizer, theirs, examples, conversations, target, marker: str) -> None:
    (end,) = tokenizer.encode_batch([marker])[0]  # one token
    for messages, example in zip(conversations, examples, strict=True):
        # transformers renders and tokenizes the exported folder's template to our very ids.
        assert theirs.apply_chat_template(messages, tokenize=True, return_dict=False) \
            == example.ids
        trained_ends = [k for k, (i, m) in enumerate(zip(example.ids, example.mask, strict=True))
                        if m and i == end]
        replies = sum(m["role"] == "assistant" for m in messages)
        assert len(trained_ends) == replies  # every assistant turn's end is trained ...
        for k in trained_ends:  # ... and the token after it is not
            assert k + 1 == len(example.ids) or not example.mask[k + 1]
        for k in trained_ends:  # ... after its reply, trained with it
            assert k > 0 and example.mask[k - 1]
    generation = json.loads((target / "generation_config.json").read_text())
    stops = generation["eos_token_id"]  # one id where the turn end is EOS itself
    assert end in (stops if isinstance(stops, list) else [stops])  # transformers, vLLM stop there


def test_a_llama31_template_file_renders_its_bos_and_trains_and_stops_at_eot(tmp_path):
    data = tmp_path / "chat.jsonl"
    conversations = _conversations(50)
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    out = tmp_path / "llama"
    result = invoke("run", "--output-dir", str(out), *TINY, *BPE, "--max-steps", "2",
                    "--dataset-id", str(data), "--chat-template", str(LLAMA31))
    assert result.exit_code == 0, result.output
    assert "<|eot_id|> are special tokens" in " ".join(result.output.split())
    tokenizer, theirs, examples, target = _trained_and_exported(tmp_path, out, conversations)
    # {{ bos_token }} rendered as the tokenizer's (the exported tokenizer_config's) BOS.
    config = json.loads((target / "tokenizer_config.json").read_text())
    assert tokenizer.decode(examples[0].ids[:1]) == "" and examples[0].ids[0] == \
        tokenizer.hf.token_to_id(config["bos_token"])
    _check_turn_ends(tokenizer, theirs, examples, conversations, target, "<|eot_id|>")


@pytest.mark.parametrize("name, marker", [("google-gemma-3-4b-it", "<end_of_turn>"),
                                          ("mistralai-Mistral-7B-Instruct-v0.3", "<|endoftext|>")])
def test_gemma3_and_mistral_v03_template_files_train_and_stop_at_their_turn_end(tmp_path, name,
                                                                              marker):
    """Gemma 3's <end_of_turn> becomes a special token; Mistral v0.3 ends a reply with
    ``{{ eos_token }}``, the kerastrain tokenizer's EOS (its space before each reply trained
    with the reply); transformers on the exported folder renders the ids trained on."""
    data = tmp_path / "chat.jsonl"
    conversations = _conversations(30)
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    out = tmp_path / name
    result = invoke("run", "--output-dir", str(out), *TINY, *BPE, "--max-steps", "2",
                    "--dataset-id", str(data), "--chat-template",
                    str(LLAMA31.with_name(f"{name}.jinja")))
    assert result.exit_code == 0, result.output
    tokenizer, theirs, examples, target = _trained_and_exported(tmp_path, out, conversations)
    _check_turn_ends(tokenizer, theirs, examples, conversations, target, marker)


def test_chat_after_pretraining_adds_the_markers_and_grows_the_embedding(tmp_path):
    """A tokenizer reused from a text checkpoint (--init-from) gets ChatML's markers as special
    tokens, with a notice; the checkpoint's embedding rows are kept, new rows added."""
    import numpy as np

    from kerastrain.model.loading import load

    text = tmp_path / "text"
    result = invoke("run", "--output-dir", str(text), *TINY, *BPE, "--max-steps", "1")
    assert result.exit_code == 0, result.output
    before, old = load(text)
    data = _chat_file(tmp_path / "chat.jsonl", 50)
    out = tmp_path / "chat"
    result = invoke("run", "--output-dir", str(out), *TINY, *BPE[2:], "--max-steps", "2",
                    "--dataset-id", str(data), "--init-from", str(text / "final_checkpoint"),
                    "--learning-rate", "1e-9")
    assert result.exit_code == 0, result.output
    assert (f"added <|im_start|>, <|im_end|> as special tokens (the chat template's markers; "
            f"vocab {old.vocab_size} -> {old.vocab_size + 2})") in " ".join(result.output.split())
    after, tokenizer = load(out)
    assert tokenizer.vocab_size == old.vocab_size + 2
    embedding = [np.asarray(v) for v in before.weights if "embedding" in v.path][0]
    grown = [np.asarray(v) for v in after.weights if "embedding" in v.path][0]
    assert grown.shape[0] == embedding.shape[0] + 2
    # The checkpoint's rows, kept (a learning rate of 1e-9 moves them by ~1e-9).
    np.testing.assert_allclose(grown[: embedding.shape[0]], embedding, atol=1e-6)
    conversations = [json.loads(line)["messages"] for line in data.read_text().splitlines()]
    tokenizer, theirs, examples, target = _trained_and_exported(tmp_path, out, conversations)
    _check_turn_ends(tokenizer, theirs, examples, conversations, target, "<|im_end|>")
    # Only the vocabulary may grow: another shape is still another model, refused.
    other = invoke("run", "--output-dir", str(tmp_path / "other"), *TINY, *BPE[2:], "--d-ff",
                   "128", "--max-steps", "1", "--dataset-id", str(data), "--init-from",
                   str(text / "final_checkpoint"))
    assert other.exit_code != 0 and "another shape" in other.output


def test_chat_template_kwargs_render_training_and_travel_with_the_model(tmp_path):
    """--chat-template-kwargs enable_thinking=false renders Qwen 3's template without thinking;
    the value is kept in chat_template.json (chat, eval and export render the same), and
    transformers given the same keyword gives the ids trained on."""
    from kerastrain.model.loading import chat_template_of

    qwen3 = LLAMA31.with_name("Qwen-Qwen3-0.6B.jinja")
    data = tmp_path / "chat.jsonl"
    conversations = [m for m in _conversations(20) if m[0]["role"] != "system"]
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    out = tmp_path / "qwen3"
    result = invoke("run", "--output-dir", str(out), *TINY, *BPE, "--max-steps", "1",
                    "--dataset-id", str(data), "--chat-template", str(qwen3),
                    "--chat-template-kwargs", "enable_thinking=false")
    assert result.exit_code == 0, result.output
    template = chat_template_of(out / "final_checkpoint")
    assert template.kwargs == {"enable_thinking": False}
    prompt = template.render(conversations[0][:1], add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    tokenizer, theirs, examples, _ = _trained_and_exported(tmp_path, out, conversations)
    for messages, example in zip(conversations, examples, strict=True):
        assert theirs.apply_chat_template(messages, tokenize=True, return_dict=False,
                                          enable_thinking=False) == example.ids
    trained = [i for e in examples for i, m in zip(e.ids, e.mask, strict=True) if m]
    assert tokenizer.decode(trained).count("<think>") == 0  # the empty thought is the prompt's


@pytest.mark.parametrize("template", ["meta-llama-Llama-3.1-8B-Instruct",
                                      "Qwen-Qwen2.5-7B-Instruct"])
def test_tool_calling_conversations_train_the_calls_and_export_what_transformers_renders(
        tmp_path, template):
    """A ``tools`` column and assistant ``tool_calls`` (OpenAI's form: JSON-string arguments,
    no content): the calls are trained, the tool results are not, and transformers given the
    same tools renders the exported folder's template to the ids trained on."""
    from tests.data.test_real_templates import WEATHER

    rows = []
    for i in range(20):
        city = ["Paris", "Rome", "Oslo", "Lima"][i % 4]
        rows.append({"tools": json.dumps([WEATHER]), "messages": [
            {"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": city})}}]},
            {"role": "tool", "content": f"{10 + i} C", "tool_call_id": f"call_{i}"},
            {"role": "assistant", "content": f"It is {10 + i} C in {city}."}]})
    data = tmp_path / "tools.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "tools"
    result = invoke("run", "--output-dir", str(out), *TINY, *BPE, "--max-steps", "1",
                    "--seq-len", "1024", "--dataset-id", str(data), "--chat-template",
                    str(LLAMA31.with_name(f"{template}.jinja")))  # tool schemas: long prompts
    assert result.exit_code == 0, result.output
    from transformers import AutoTokenizer

    from kerastrain.data.formats import ChatFormat, FormatContext
    from kerastrain.model.loading import chat_template_of, load

    target = tmp_path / "tools-hf"
    assert invoke("export", str(out), "--to", str(target)).exit_code == 0
    _, tokenizer = load(out)
    context = FormatContext(tokenizer=tokenizer, template=chat_template_of(out))
    theirs = AutoTokenizer.from_pretrained(str(target))
    for row, example in zip(rows, ChatFormat().encode(rows, context), strict=True):
        messages = json.loads(json.dumps(row["messages"]))
        call = messages[1]["tool_calls"][0]["function"]
        call["arguments"] = json.loads(call["arguments"])  # the object transformers expects
        assert theirs.apply_chat_template(messages, tools=[WEATHER], tokenize=True,
                                          return_dict=False) == example.ids
        trained = tokenizer.decode([i for i, m in zip(example.ids, example.mask, strict=True)
                                    if m])
        assert "get_weather" in trained and messages[1]["tool_calls"][0]["function"][
            "arguments"]["city"] in trained
        assert row["messages"][2]["content"] not in trained.replace(
            row["messages"][3]["content"], "")  # the tool's result is not trained
