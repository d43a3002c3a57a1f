"""``kerastrain serve`` as a user runs it: a Hugging Face folder served by the command in its own
process answers the real openai client with our decoder's greedy ids; bad paths are one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from kerastrain.model.decoder import generate_ids, make_sampler
from tests.helpers import invoke
from tests.model.test_hf_import import _hf_folder


def test_serve_a_hugging_face_folder_from_the_command_line(tmp_path):
    import openai

    from kerastrain.model.loading import load_model_folder

    folder, _ = _hf_folder(tmp_path, "llama3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "KERAS_BACKEND": "jax", "KERASTRAIN_API_KEY": "sesame"}
    server = subprocess.Popen([sys.executable, "-m", "kerastrain", "serve", str(folder), "--port",
                               str(port), "--seq-len", "32", "--name", "tiny-llama"],
                              env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert time.time() < deadline, "kerastrain serve did not answer /health"
                time.sleep(0.5)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sesame",
                               max_retries=0)
        reply = client.completions.create(model="tiny-llama", prompt="the model", max_tokens=6,
                                          temperature=0)
        model, tokenizer = load_model_folder(folder, 32)
        prompt = tokenizer.encode_batch(["the model"])[0]
        ids = generate_ids(model, prompt, 6, make_sampler(temperature=0), (tokenizer.eos_id,))
        assert reply.choices[0].text == tokenizer.decode([i for i in ids if i != tokenizer.eos_id])
        assert reply.usage.completion_tokens == len(ids)
    finally:
        server.terminate()
        server.wait(30)
    said = server.stderr.read()
    assert "Serving 'tiny-llama' on http://127.0.0.1:" in said and "this machine only" in said
    assert "API key required" in said


def test_a_folder_without_a_model_is_one_line(tmp_path):
    result = invoke("serve", str(tmp_path))
    assert result.exit_code != 0 and "holds no checkpoint" in result.output
    assert "Traceback" not in result.output
