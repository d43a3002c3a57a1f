"""Generation: the KV cache matches a full forward pass, seeded sampling repeats, load + CLI."""

from __future__ import annotations

import shutil

import jax
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kerastrain.config import ModelConfig
from kerastrain.data.tokenizer import ByteTokenizer
from kerastrain.errors import CheckpointError, ConfigError
from kerastrain.model.causal_lm import GPTCausalLM
from kerastrain.model.decoder import generate_ids, generate_text, make_sampler
from kerastrain.model.gpt import build_model
from kerastrain.model.loading import load
from tests.helpers import write_checkpoint

BYTES = dict(vocab_size=257, seq_len=32, d_model=32, num_layers=2, num_heads=4, d_ff=64,
             dropout_rate=0.0)


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory):
    """A finished run's layout: model_config.json, tokenizer.json, final_checkpoint/."""
    keras.utils.set_random_seed(3)
    root = tmp_path_factory.mktemp("run")
    cfg = ModelConfig(**BYTES)
    model = build_model(cfg)
    for v in model.weights:  # larger weights so sampling is far from uniform
        v.assign(np.asarray(v.value) * 8 if len(v.shape) == 2 else v.value)
    cfg.save(root / "model_config.json")
    ByteTokenizer().save(root / "tokenizer.json")
    write_checkpoint(model, root / "final_checkpoint")
    return root


@pytest.mark.parametrize("use_rope", [True, False])
def test_cached_decoding_matches_the_full_forward_pass(use_rope):
    cfg = ModelConfig(**{**BYTES, "use_rope": use_rope})
    model = build_model(cfg)
    x = np.random.default_rng(0).integers(0, 257, (2, 12)).astype("int32")
    full = np.asarray(model(x))
    lm = GPTCausalLM(model, compile=False)
    # Jitted: op-by-op eager dispatch compiles every primitive for every shape (slow on CPU).
    step = jax.jit(lm.call_with_cache)
    cache = keras.ops.zeros((2, 2, 2, 12, 4, 8))
    logits, _, cache = step(x[:, :5], cache, 0)  # the prompt at once
    steps = [np.asarray(logits)]
    for i in range(5, 12):  # then one token at a time
        logits, _, cache = step(x[:, i : i + 1], cache, i)
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=2e-4)


def test_load_restores_the_model_and_tokenizer(output_dir):
    model, tokenizer = load(output_dir)
    assert tokenizer.eos_id == 256 and model.config.vocab_size == 257
    same, _ = load(output_dir / "final_checkpoint", with_tokenizer=False)
    for a, b in zip(model.weights, same.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))


def test_load_rejects_a_mismatching_config(output_dir, tmp_path):
    shutil.copytree(output_dir / "final_checkpoint", tmp_path / "final_checkpoint")
    ModelConfig(**{**BYTES, "num_layers": 3}).save(tmp_path / "model_config.json")
    ByteTokenizer().save(tmp_path / "tokenizer.json")
    with pytest.raises(CheckpointError, match="different model configuration"):
        load(tmp_path)
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load(tmp_path / "final_checkpoint" / "nowhere")


def test_greedy_continuation_is_the_argmax_of_the_model(output_dir):
    model, _ = load(output_dir, with_tokenizer=False)
    prompt = [72, 105, 32]
    got = generate_ids(model, prompt, 6, make_sampler(temperature=0))
    forward = jax.jit(model.__call__)
    seq = np.zeros((1, 9), "int32")  # one shape: causal, so the zeros after i do not matter
    seq[0, :3] = prompt
    for i in range(3, 9):
        seq[0, i] = int(np.asarray(forward(seq))[0, i - 1].argmax())
    assert got == seq[0, 3:].tolist()
    assert len(set(got)) > 1  # a non-trivial model, not one repeated token

    # A stop token ends the sequence right after its first new occurrence.
    stop = got[2]
    stopped = generate_ids(model, prompt, 6, make_sampler(temperature=0), stop_token_ids=(stop,))
    assert stopped == got[: got.index(stop) + 1]


def test_same_seed_same_text_via_the_cli(output_dir):
    from kerastrain.cli import cli

    args = ["generate", str(output_dir), "--prompt", "Hi", "--max-new-tokens", "12",
            "--temperature", "0.9", "--top-k", "40", "--seed", "7"]
    first = CliRunner().invoke(cli, args)
    second = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout and first.stdout.startswith("Hi")
    other = CliRunner().invoke(cli, args[:-1] + ["8"])
    assert other.exit_code == 0 and other.stdout != first.stdout
    bad = CliRunner().invoke(cli, ["generate", str(output_dir), "--top-p", "1.5"])
    assert bad.exit_code == 2 and "--top-p" in bad.output


def test_samplers_and_seeds(output_dir):
    model, tokenizer = load(output_dir)
    a = generate_text(model, tokenizer, "ab", 8, temperature=1.0, top_p=0.9, seed=1)
    b = generate_text(model, tokenizer, "ab", 8, temperature=1.0, top_p=0.9, seed=1)
    assert a == b and a.startswith("ab")
    c = generate_text(model, tokenizer, "ab", 8, temperature=1.0, top_p=0.9, seed=2)
    assert c != a
    with pytest.raises(ConfigError):
        make_sampler(-1.0)


def test_stop_token_zero_does_not_end_generation_at_once(output_dir):
    # The BPE tokenizer's EOS is id 0, the value keras-hub's samplers see in ungenerated slots.
    model, _ = load(output_dir)
    free = generate_ids(model, [5, 6], 12, make_sampler(1.0, top_k=40, seed=3))
    stopped = generate_ids(model, [5, 6], 12, make_sampler(1.0, top_k=40, seed=3), (0,))
    expected = free[: free.index(0) + 1] if 0 in free else free
    assert stopped == expected and len(stopped) >= 1


def test_several_prompts_compile_once(output_dir, tmp_path):
    from kerastrain.cli import cli

    compiles = []

    def count(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        model, tokenizer = load(output_dir)
        sampler = make_sampler(temperature=0)
        first = generate_text(model, tokenizer, "Hi", 6, sampler=sampler)
        after_first = len(compiles)
        stats: dict = {}
        second = generate_text(model, tokenizer, "Hello there", 5, sampler=sampler, stats=stats)
        assert after_first > 0 and len(compiles) == after_first  # no compile for the second
        assert first.startswith("Hi") and second.startswith("Hello there")
        assert stats["new_tokens"] >= 1 and stats["tokens_per_sec"] > 0
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("abc\nxyz\n")
    result = CliRunner().invoke(cli, ["generate", str(output_dir), "--prompt", "Hi",
                                      "--prompts-file", str(prompts), "--max-new-tokens", "4",
                                      "--temperature", "0"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("Hi") and out.index("\nabc") < out.index("\nxyz")
    assert result.stderr.count("time to first token") == 3 and "tokens/s" in result.stderr




def _greedy_by_forward_pass(model, prompt, n):
    forward = jax.jit(model.__call__)
    seq = np.zeros((1, len(prompt) + n), "int32")  # causal: the zeros after i do not matter
    seq[0, : len(prompt)] = prompt
    for i in range(len(prompt), len(prompt) + n):
        seq[0, i] = int(np.asarray(forward(seq))[0, i - 1].argmax())
    return seq[0, len(prompt):].tolist()


def test_one_decoder_batches_prompts_of_different_lengths_with_their_log_probs(output_dir):
    from kerastrain.model.decoder import Decoder, Request, log_softmax

    model, _ = load(output_dir, with_tokenizer=False)
    prompts = [[72, 105, 32], [5], [9, 8, 7, 6, 5, 4, 3], [72, 105, 32]]
    decoder = Decoder(model, slots=3)  # fewer slots than requests: the fourth waits for a slot
    # The first ends early: the third moves into its slot mid-decode, the fourth joins later.
    lengths = [2, 6, 6, 6]
    requests = [Request(p, n, top_logprobs=2, echo=True)
                for p, n in zip(prompts, lengths, strict=True)]
    order = [(r, t.id) for r, t in decoder.run(requests)]
    assert [t.id for t in requests[1].new] == generate_ids(model, prompts[1], 6,
                                                           make_sampler(temperature=0))
    for prompt, request, n in zip(prompts, requests, lengths, strict=True):
        ids = [t.id for t in request.new]
        assert ids == _greedy_by_forward_pass(model, prompt, n)
        # Log-probs are the model's own: log-softmax of the full forward pass's logits.
        full = log_softmax(np.asarray(model(np.array([prompt + ids], "int32")))[0])
        expected = [full[i - 1, t] for i, t in enumerate(prompt + ids) if i > 0]
        got = request.prompt_logprobs[1:] + [t.logprob for t in request.new]
        np.testing.assert_allclose(got, expected[: len(got)], atol=1e-4)
        assert request.new[0].top[0][0] == ids[0] and len(request.new[0].top) == 2
        assert request.finish_reason == "length" and request.slot is None
    assert [r for r, _ in order[:3]] == requests[:3]  # the first three start together
    assert decoder.free_slots() == 3


def test_sampled_tokens_do_not_depend_on_the_batch(output_dir):
    from kerastrain.model.decoder import Decoder, Request

    model, _ = load(output_dir, with_tokenizer=False)
    sampling = make_sampler(0.9, top_k=40, top_p=0.95, seed=5)
    alone = [t.id for _, t in Decoder(model).run([Request([7], 8, sampling)])]
    batch = [Request([7], 8, sampling), Request([1, 2, 3], 8, make_sampler(1.0, seed=9))]
    list(Decoder(model, slots=2).run(batch))
    assert [t.id for t in batch[0].new] == alone and len(set(alone)) > 1
