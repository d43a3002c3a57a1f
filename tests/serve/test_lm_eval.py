"""EleutherAI's lm-evaluation-harness through ``kerastrain serve``: a multiple-choice task defined
in local files (a task YAML and a JSONL beside it, no hub download) scores what the model's own
log-probs give, and lm-eval's own tokenizer client reads the server's tokenizer."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from kerastrain.model.decoder import log_softmax
from tests.helpers import invoke, kerastrain
from tests.serve.test_openai_server import _post

# Short questions (the tiny model's context is 64 tokens) with 3 or 4 answers of unequal lengths
# (acc and acc_norm differ).
ITEMS = [
    ("What is 2 plus 2?", ["4", "five", "a dog"], 0),
    ("Which animal barks?", ["a cat", "a dog", "a fish", "the sky"], 1),
    ("What colour is the sky?", ["green", "blue", "loud"], 1),
    ("What do bees make?", ["honey", "steel", "rain", "music"], 0),
    ("Where do fish live?", ["in trees", "in water", "on the moon"], 1),
    ("What is ice?", ["frozen water", "hot sand", "a song"], 0),
    ("How many legs has a cat?", ["two", "four", "ten", "none"], 1),
    ("What do we read?", ["books", "spoons", "clouds"], 0),
    ("Which is a fruit?", ["a chair", "an apple", "a road"], 1),
    ("What gives light at night?", ["the moon", "a shoe", "bread", "salt"], 0),
    ("What is hot?", ["fire", "snow", "ice"], 0),
    ("Which one flies?", ["a stone", "a bird", "a table"], 1),
]
TASK = """\
task: tiny_questions
dataset_path: json
dataset_kwargs:
  data_files:
    test: questions.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task")
    with open(folder / "questions.jsonl", "w") as f:
        for question, choices, answer in ITEMS:
            f.write(json.dumps({"question": question, "choices": choices, "answer": answer}) + "\n")
    (folder / "tiny_questions.yaml").write_text(TASK)
    return folder / "tiny_questions.yaml"


def _direct_scores(model, tokenizer, items=ITEMS):
    """acc and acc_norm from the model's log-probs, computed here: the continuation is ' ' +
    choice, its tokens those of context + continuation after the context's own (lm-eval's rule
    for causal models), acc_norm divides by the choice's length in characters."""
    acc, acc_norm, lls = [], [], []
    for question, choices, answer in items:
        context = f"Question: {question}\nAnswer:"
        context_ids = tokenizer.encode_batch([context])[0]
        scores = []
        for choice in choices:
            ids = tokenizer.encode_batch([context + " " + choice])[0]
            assert ids[: len(context_ids)] == context_ids
            logp = log_softmax(np.asarray(model(np.array([ids], "int32")))[0])
            scores.append(sum(logp[i - 1, ids[i]] for i in range(len(context_ids), len(ids))))
        lls.append(scores)
        acc.append(float(np.argmax(scores) == answer))
        lengths = np.array([len(c) for c in choices], float)
        acc_norm.append(float(np.argmax(np.array(scores) / lengths) == answer))
    return float(np.mean(acc)), float(np.mean(acc_norm)), lls


def test_lm_eval_accuracy_equals_the_accuracy_of_our_log_probs(chat_run, served, task_file):
    from kerastrain.serve.harness import HarnessRequest, run_tasks

    _, model = served
    acc, acc_norm, lls = _direct_scores(model, served[0].tokenizer)
    assert 0 < acc < 1 or 0 < acc_norm < 1  # not a task every model aces or fails

    out = run_tasks(HarnessRequest(str(chat_run), [str(task_file)], log_samples=True))
    assert out["lm_eval_model"] == "local-completions"
    metrics = out["results"]["tiny_questions"]
    assert metrics["acc,none"] == pytest.approx(acc, abs=1e-9)
    assert metrics["acc_norm,none"] == pytest.approx(acc_norm, abs=1e-9)
    # Item by item: the log-likelihood lm-eval received for each choice is the model's own.
    samples = out["samples"]["tiny_questions"]
    assert sorted(s["doc_id"] for s in samples) == list(range(len(ITEMS)))
    for sample in samples:
        got = [resp[0][0] for resp in sample["resps"]]
        np.testing.assert_allclose(got, lls[sample["doc_id"]], atol=1e-4)


def test_the_eval_command_prints_lm_evals_scores(chat_run, served, task_file):
    """The command a user types, in its own process: the same accuracy on the first 5 items."""
    _, model = served
    first = ITEMS[:5]
    direct = _direct_scores(model, served[0].tokenizer, first)[0]
    done = kerastrain("eval", str(chat_run), "--task", str(task_file), "--max-examples", "5",
                      "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["results"]["tiny_questions"]["acc,none"] == pytest.approx(direct, abs=1e-9)
    table = kerastrain("eval", str(chat_run), "--task", str(task_file), "--max-examples", "5")
    assert table.returncode == 0, table.stderr[-3000:]
    assert "tiny_questions" in table.stdout and "acc_norm" in table.stdout


def test_lm_evals_tokenizer_client_reads_the_servers_tokenizer(server, served):
    from lm_eval.utils import RemoteTokenizer, check_remote_tokenizer_support

    tokenizer = served[0].tokenizer
    assert check_remote_tokenizer_support(server.url + "/v1/completions")
    remote = RemoteTokenizer(server.url + "/v1/completions")
    text = "Question: what is 2 plus 2?\nAnswer: 4 <|endoftext|>"
    assert remote.encode(text) == tokenizer.encode_batch([text])[0]
    assert remote.eos_token_id == tokenizer.eos_id
    assert remote.decode(tokenizer.encode_batch([text[:-13]])[0]) == text[:-13]
    assert remote.tokenizer_info["model_max_length"] == 64
    # Bad bodies get OpenAI's error object, and the routes keep answering.
    for path, body, param in (("/detokenize", {"tokens": [1, -2]}, "tokens"),
                              ("/detokenize", {"tokens": "12"}, "tokens"),
                              ("/tokenize", {"prompt": 3}, "prompt")):
        status, out = _post(server, path, body)
        assert status == 400 and out["error"]["param"] == param, (path, out)
    assert _post(server, "/tokenize", {"prompt": "Answer:"})[1]["tokens"] == (
        tokenizer.encode_batch(["Answer:"])[0])


def test_a_task_that_does_not_exist_is_a_one_line_error(chat_run, tmp_path):
    result = invoke("eval", str(chat_run), "--task", "no_such_task_anywhere")
    assert result.exit_code == 2 and "lm-eval has no such task" in result.output
    result = invoke("eval", str(chat_run), "--task", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2 and "no such task file" in result.output
    result = invoke("eval", str(chat_run), "--task", "x.yaml", "--dataset-id", "other.txt")
    assert result.exit_code == 2 and "--dataset-id apply to the loss" in result.output


def test_without_the_eval_extra_the_error_names_the_install_command(chat_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what `import lm_eval` meets uninstalled
    result = invoke("eval", str(chat_run), "--task", "tiny_questions")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: kerastrain eval --task needs the eval extra (lm_eval is missing): "
        "pip install 'kerastrain[eval]'"]


GENERATION_TASK = """\
task: tiny_replies
dataset_path: json
dataset_kwargs:
  data_files:
    test: replies.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["###"]
  max_gen_toks: 8
  do_sample: false
  temperature: 0
metric_list:
  - metric: exact_match
"""


def test_a_generation_task_goes_through_the_chat_template(chat_run, served, tmp_path):
    """Every task generates and the model has a chat template: lm-eval's chat model, whose
    replies are the decoder's greedy replies to the same one-message conversations."""
    from kerastrain.model.decoder import generate_ids, make_sampler
    from kerastrain.serve.harness import HarnessRequest, run_tasks

    questions = ["What is 3 plus 3?", "Say hello.", "Name a colour."]
    with open(tmp_path / "replies.jsonl", "w") as f:
        for q in questions:
            f.write(json.dumps({"question": q, "answer": "six"}) + "\n")
    (tmp_path / "replies.yaml").write_text(GENERATION_TASK)
    out = run_tasks(HarnessRequest(str(chat_run), [str(tmp_path / "replies.yaml")],
                                   log_samples=True))
    assert out["lm_eval_model"] == "local-chat-completions"
    s, model = served
    stops = s.template.turn_end_ids(s.tokenizer)
    for sample in sorted(out["samples"]["tiny_replies"], key=lambda x: x["doc_id"]):
        messages = [{"role": "user", "content": questions[sample["doc_id"]]}]
        prompt = s.tokenizer.encode_batch([s.template.render(messages,
                                                             add_generation_prompt=True)])[0]
        ids = generate_ids(model, prompt, 8, make_sampler(temperature=0), stops)
        expected = s.tokenizer.decode([i for i in ids if i not in stops]).split("###")[0]
        assert sample["resps"] == [[expected]] and expected


def test_the_tokenizer_routes_want_the_api_key_when_one_is_set(served):
    from dataclasses import replace

    from starlette.testclient import TestClient

    from kerastrain.serve.openai_api import build_app

    client = TestClient(build_app(replace(served[0], api_key="sesame")))
    assert client.get("/tokenizer_info").status_code == 401
    assert client.post("/tokenize", json={"prompt": "hi"}).json()["error"]["code"] == (
        "invalid_api_key")
    answer = client.post("/detokenize", json={"tokens": [72, 105]},
                         headers={"Authorization": "Bearer sesame"})
    assert answer.status_code == 200
    assert answer.json()["prompt"] == served[0].tokenizer.decode([72, 105])
