"""The real ``openai`` client against a running ``kerastrain serve`` app: replies equal the one
decoder's greedy ids, log-probs equal the model's own, concurrency changes nothing, bad requests
get OpenAI's error object and the server keeps serving."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from kerastrain.model.decoder import generate_ids, log_softmax, make_sampler

QUESTION = [{"role": "user", "content": "What is 3 plus 3?"}]


def _client(server, **kwargs):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=kwargs.pop("api_key", "none"),
                         max_retries=0, **kwargs)


def _greedy_reply(served, messages, max_tokens):
    s, model = served
    prompt = s.tokenizer.encode_batch([s.template.render(messages, add_generation_prompt=True)])[0]
    stops = s.template.turn_end_ids(s.tokenizer)
    ids = generate_ids(model, prompt, max_tokens, make_sampler(temperature=0), stops)
    return s.tokenizer.decode([i for i in ids if i not in stops]), ids, prompt


def test_chat_streamed_or_not_equals_the_decoders_greedy_ids(server, served):
    client = _client(server)
    expected, ids, prompt = _greedy_reply(served, QUESTION, 12)
    reply = client.chat.completions.create(model="tiny-chat", messages=QUESTION, max_tokens=12,
                                           temperature=0, logprobs=True, top_logprobs=2)
    choice = reply.choices[0]
    assert choice.message.content == expected and expected
    assert reply.usage.prompt_tokens == len(prompt) and reply.usage.completion_tokens == len(ids)
    assert choice.finish_reason == ("stop" if len(ids) < 12 else "length")
    shown = [i for i in ids if i not in served[0].template.turn_end_ids(served[0].tokenizer)]
    assert [e.token for e in choice.logprobs.content] == [served[0].tokenizer.decode([i])
                                                          for i in shown]
    assert all(e.top_logprobs[0].logprob >= e.logprob - 1e-6 for e in choice.logprobs.content)

    stream = client.chat.completions.create(model="tiny-chat", messages=QUESTION, max_tokens=12,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == expected
    # Really streamed: a piece per shown token (a reply of one token has one piece).
    assert sum(1 for p in pieces if p) > 1 or len(shown) == 1
    assert chunks[-1].usage.completion_tokens == len(ids)

    # n choices with a seed: each its own seeded sample, the same on every call.
    def sampled():
        r = client.chat.completions.create(model="tiny-chat", messages=QUESTION, max_tokens=12,
                                           temperature=1.0, top_p=0.9, seed=3, n=3)
        return [c.message.content for c in r.choices]

    first = sampled()
    assert sampled() == first and len(set(first)) > 1
    # A stop string ends the reply before it.
    cut = client.chat.completions.create(model="tiny-chat", messages=QUESTION, max_tokens=12,
                                         temperature=0, stop=[expected[2:4]])
    assert cut.choices[0].message.content == expected[: expected.index(expected[2:4])]
    assert cut.choices[0].finish_reason == "stop"
    assert [m.id for m in client.models.list().data] == ["tiny-chat"]


def test_completions_echo_log_probs_are_the_models_own(server, served):
    s, model = served
    client = _client(server)
    text = "The cat sat on the mat"
    reply = client.completions.create(model="tiny-chat", prompt=[text, "Hello"], max_tokens=3,
                                      temperature=0, echo=True, logprobs=1)
    ids = s.tokenizer.encode_batch([text])[0]
    first = reply.choices[0]
    new = generate_ids(model, ids, 3, make_sampler(temperature=0), (s.tokenizer.eos_id,))
    assert first.text == text + s.tokenizer.decode([i for i in new if i != s.tokenizer.eos_id])
    everything = ids + [i for i in new if i != s.tokenizer.eos_id]
    full = log_softmax(np.asarray(model(np.array([everything], "int32")))[0])
    expected = [full[i - 1, t] for i, t in enumerate(everything) if i > 0]
    got = first.logprobs.token_logprobs
    assert got[0] is None and len(got) == len(everything)
    np.testing.assert_allclose(got[1:], expected, atol=1e-4)
    assert "".join(first.logprobs.tokens) == first.text
    assert len(reply.choices) == 2 and reply.choices[1].text.startswith("Hello")
    streamed = client.completions.create(model="tiny-chat", prompt=[text, "Hello"], max_tokens=3,
                                         temperature=0, echo=True, stream=True)
    joined = ["", ""]
    for event in streamed:
        joined[event.choices[0].index] += event.choices[0].text
    assert joined == [c.text for c in reply.choices]
    # Token-id prompts (what lm-eval sends with its own tokenizer) score the same.
    same = client.completions.create(model="tiny-chat", prompt=ids, max_tokens=1, echo=True,
                                     logprobs=0, temperature=0)
    np.testing.assert_allclose(same.choices[0].logprobs.token_logprobs[1:len(ids)],
                               got[1:len(ids)], atol=1e-6)


def test_the_log_likelihood_request_lm_eval_sends(server, served):
    """lm-eval's ``local-completions`` scores a (context, continuation) pair with this body and
    reads the answer this way (``parse_logprobs``): the continuation's summed log-prob, and
    whether each of its tokens was the most likely one."""
    s, model = served
    context = s.tokenizer.encode_batch(["Question: what is 2 plus 2? Answer:"])[0]
    pairs = [context + s.tokenizer.encode_batch([" 4"])[0],
             context + s.tokenizer.encode_batch([" blue cheese"])[0],
             context + generate_ids(model, context, 2, make_sampler(temperature=0))]
    status, out = _post(server, "/v1/completions", {
        "model": "tiny-chat", "prompt": pairs, "temperature": 0, "max_tokens": 1, "logprobs": 1,
        "seed": 1234, "echo": True})
    assert status == 200 and len(out["choices"]) == 3
    greedy = []
    for choice, ids in zip(out["choices"], pairs, strict=True):
        ctxlen = len(context)
        token_logprobs = choice["logprobs"]["token_logprobs"][ctxlen:-1]
        top_logprobs = choice["logprobs"]["top_logprobs"][ctxlen:-1]
        is_greedy = all(lp == max(top.values()) for lp, top in zip(token_logprobs, top_logprobs,
                                                                    strict=True))
        full = log_softmax(np.asarray(model(np.array([ids], "int32")))[0])
        expected = [full[i - 1, ids[i]] for i in range(ctxlen, len(ids))]
        np.testing.assert_allclose(sum(token_logprobs), sum(expected), atol=1e-4)
        assert is_greedy == all(full[i - 1].argmax() == ids[i] for i in range(ctxlen, len(ids)))
        greedy.append(is_greedy)
    assert greedy[-1] and not all(greedy)  # the decoder's own continuation is greedy


def test_eight_concurrent_clients_get_what_one_at_a_time_gets(server):
    client = _client(server)
    questions = [[{"role": "user", "content": f"What is {i} plus {i}?"}] for i in range(8)]

    def ask(messages):
        r = client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=10,
                                           temperature=0.8, seed=11)
        return r.choices[0].message.content

    alone = [ask(q) for q in questions]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, questions))
    assert together == alone and len(set(alone)) > 1


def _post(server, path, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method="POST", headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, served):
    import openai

    client = _client(server)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4", messages=QUESTION)
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="tiny-chat", messages=[
            {"role": "user", "content": "word " * 200}])
    assert too_long.value.code == "context_length_exceeded"
    for bad in ({"max_tokens": 0}, {"max_tokens": -3}, {"temperature": "hot"}, {"n": 0}):
        status, body = _post(server, "/v1/chat/completions",
                             {"model": "tiny-chat", "messages": QUESTION, **bad})
        assert status == 400 and body["error"]["type"] == "invalid_request_error", bad
        assert body["error"]["param"] == next(iter(bad))
    status, body = _post(server, "/v1/chat/completions", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = _post(server, "/v1/completions", {"model": "tiny-chat", "prompt": [1.5, "a"]})
    assert status == 400 and body["error"]["param"] == "prompt"
    # Unknown fields are ignored, as OpenAI ignores them; the server still answers correctly.
    status, body = _post(server, "/v1/chat/completions", {
        "model": "tiny-chat", "messages": QUESTION, "max_tokens": 12, "temperature": 0,
        "frequency_penalty_v9": 1, "user": "x"})
    assert status == 200 and body["choices"][0]["message"]["content"] == _greedy_reply(
        served, QUESTION, 12)[0]


def test_an_api_key_is_required_when_set(served):
    import openai

    from kerastrain.serve.openai_api import Served, build_app
    from tests.serve.conftest import RunningServer

    s = served[0]
    locked = RunningServer(build_app(Served(s.name, s.tokenizer, s.template, s.engine, "k3y")))
    try:
        with pytest.raises(openai.AuthenticationError):
            _client(locked, api_key="wrong").models.list()
        reply = _client(locked, api_key="k3y").chat.completions.create(
            model="tiny-chat", messages=QUESTION, max_tokens=4, temperature=0)
        assert reply.choices[0].message.content == _greedy_reply(served, QUESTION, 4)[0]
        with urllib.request.urlopen(locked.url + "/health") as response:
            assert json.loads(response.read())["status"] == "ok"  # health needs no key
    finally:
        locked.stop()


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server, served):
    import httpx

    decoder = served[0].engine.decoder
    ended = []
    release = decoder.release

    def record(request, reason="cancelled"):  # the real release, watched
        ended.append((reason, len(request.new), request.max_new_tokens))
        release(request, reason)

    decoder.release = record
    try:
        body = {"model": "tiny-chat", "messages": QUESTION, "stream": True, "temperature": 2.0,
                "seed": 1}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
            next(line for line in response.iter_lines() if line.startswith("data: "))
        deadline = time.time() + 10
        while not ended or decoder.free_slots() != decoder.slots:
            assert time.time() < deadline, "the disconnected request still holds its slot"
            time.sleep(0.05)
    finally:
        decoder.release = release
    reason, made, most = ended[0]
    assert reason == "cancelled" and made < most
