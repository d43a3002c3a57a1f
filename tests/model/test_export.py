"""``kerastrain export``: Hugging Face and keras-hub folders that re-import with the same outputs."""

from __future__ import annotations

import json

import keras
import keras_hub
import numpy as np
import pytest

from kerastrain.config import ModelConfig
from kerastrain.data.tokenizer import BPETokenizer, train_byte_level_bpe
from kerastrain.model.decoder import generate_ids, make_sampler
from kerastrain.model.gpt import build_model
from kerastrain.model.loading import load
from tests.helpers import invoke, write_checkpoint

TEXTS = [
    "The quick brown fox jumps over the lazy dog. ",
    "A model trained here can be served elsewhere, if its weights say the same thing. ",
    "Rotary positions, RMS norms and gated units make a Llama; learned positions a GPT-2. ",
] * 30
TINY_BPE = ["--tokenizer", "bpe", "--vocab-size", "300", "--d-model", "32", "--num-layers", "2",
            "--num-heads", "4", "--d-ff", "64", "--seq-len", "32", "--batch-size", "4",
            "--warmup-steps", "1", "--learning-rate", "3e-3", "--max-train-examples", "200",
            "--max-val-examples", "8", "--log-every", "1"]
PROBE = "The quick brown fox, served elsewhere"


def write_run(root, cfg: ModelConfig, seed: int = 0):
    """A finished run's layout for ``cfg`` with a BPE tokenizer and visibly non-trivial weights."""
    keras.utils.set_random_seed(seed)
    tokenizer = BPETokenizer(train_byte_level_bpe(TEXTS, cfg.vocab_size))
    cfg = cfg.replace(vocab_size=tokenizer.vocab_size)
    model = build_model(cfg)
    rng = np.random.default_rng(seed)
    for v in model.weights:  # norms away from 1 and larger matrices: every weight matters
        v.assign(np.asarray(v.value) * 4 + rng.normal(0, 0.05, v.shape).astype("float32"))
    root.mkdir(parents=True, exist_ok=True)
    cfg.save(root / "model_config.json")
    tokenizer.save(root / "tokenizer.json")
    write_checkpoint(model, root / "final_checkpoint")
    return root


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny Llama-shaped base run, then a LoRA fine-tune of it (both trained for real)."""
    root = tmp_path_factory.mktemp("export")
    corpus = root / "corpus.txt"
    corpus.write_text("".join(t + "\n" for t in TEXTS))
    base, lora = root / "base", root / "lora"
    common = [*TINY_BPE, "--dataset-id", str(corpus)]
    result = invoke("run", *common, "--output-dir", str(base), "--max-steps", "3")
    assert result.exit_code == 0, result.output
    result = invoke("run", *common, "--output-dir", str(lora), "--max-steps", "3",
                    "--init-from", str(base / "final_checkpoint"), "--use-lora",
                    "--lora-rank", "2", "--tokenizer-path", str(base / "tokenizer.json"))
    assert result.exit_code == 0, result.output
    return lora


def _their_logits(backbone, ids):
    hidden = backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    return np.asarray(backbone.token_embedding(hidden, reverse=True))


def _their_greedy(task, prompt_ids, new):
    task.compile(sampler="greedy")
    length = len(prompt_ids) + new
    ids = np.zeros((1, length), "int32")
    ids[0, : len(prompt_ids)] = prompt_ids
    mask = np.zeros((1, length), bool)
    mask[0, : len(prompt_ids)] = True
    out = task.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=None)
    return [int(t) for t in np.asarray(out["token_ids"])[0, len(prompt_ids):]]


def _assert_same_model(ours, tokenizer, backbone, task_cls):
    ids = np.array(tokenizer.encode_batch([PROBE]), "int32")
    np.testing.assert_allclose(_their_logits(backbone, ids), np.asarray(ours(ids)), atol=1e-4)
    prompt = ids[0, :5].tolist()
    mine = generate_ids(ours, prompt, 8, make_sampler(temperature=0), None)
    theirs = _their_greedy(task_cls(backbone=backbone, preprocessor=None), prompt, 8)
    assert mine == theirs


def test_a_lora_run_exports_merged_to_a_llama_folder_that_reimports_exactly(lora_run, tmp_path):
    target = tmp_path / "hf"
    result = invoke("export", str(lora_run), "--to", str(target), "--format", "hf")
    assert result.exit_code == 0, result.output
    assert "llama3" in result.output
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (target / name).is_file(), name
    ours, tokenizer = load(lora_run)
    config = json.loads((target / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["eos_token_id"] == tokenizer.eos_id
    assert json.loads((target / "generation_config.json").read_text())["eos_token_id"] == tokenizer.eos_id
    assert json.loads((target / "tokenizer_config.json").read_text())["eos_token"] == "<|endoftext|>"

    backbone = keras_hub.models.Backbone.from_preset(str(target))
    assert isinstance(backbone, keras_hub.models.Llama3Backbone)
    _assert_same_model(ours, tokenizer, backbone, keras_hub.models.Llama3CausalLM)

    from tokenizers import Tokenizer

    exported = Tokenizer.from_file(str(target / "tokenizer.json"))
    texts = [PROBE, "unseen wörds & symbols 123 <|endoftext|>"]
    assert [exported.encode(t, add_special_tokens=False).ids for t in texts] == tokenizer.encode_batch(texts)
    assert exported.token_to_id("<|endoftext|>") == tokenizer.eos_id


def test_layernorm_gelu_learned_positions_export_as_gpt2(tmp_path):
    cfg = ModelConfig(vocab_size=300, seq_len=32, d_model=32, num_layers=2, num_heads=4, d_ff=128,
                      dropout_rate=0.0, use_rmsnorm=False, use_swiglu=False, use_rope=False,
                      activation="gelu_tanh")
    run = write_run(tmp_path / "run", cfg)
    target = tmp_path / "hf"
    result = invoke("export", str(run), "--to", str(target))
    assert result.exit_code == 0, result.output
    config = json.loads((target / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu_new"
    assert config["n_positions"] == 32
    ours, tokenizer = load(run)
    backbone = keras_hub.models.Backbone.from_preset(str(target))
    assert isinstance(backbone, keras_hub.models.GPT2Backbone)
    _assert_same_model(ours, tokenizer, backbone, keras_hub.models.GPT2CausalLM)


def test_keras_hub_preset_loads_as_a_causal_lm_and_generates(tmp_path):
    cfg = ModelConfig(vocab_size=300, seq_len=32, d_model=32, num_layers=2, num_heads=4, d_ff=64,
                      dropout_rate=0.0)
    run = write_run(tmp_path / "run", cfg, seed=1)
    target = tmp_path / "preset"
    result = invoke("export", str(run), "--to", str(target), "--format", "keras-hub")
    assert result.exit_code == 0, result.output
    task = keras_hub.models.CausalLM.from_preset(str(target))
    assert isinstance(task, keras_hub.models.Llama3CausalLM)
    ours, tokenizer = load(run)
    _assert_same_model(ours, tokenizer, task.backbone, keras_hub.models.Llama3CausalLM)
    task.compile(sampler="greedy")
    # keras-hub's GPT-2 preprocessor starts a prompt with <|endoftext|> (a document boundary, as
    # in our training stream) and pads with id 0, which is our EOS: with its default
    # stop_token_ids="auto" it would stop at once, so generate to max_length.
    text = task.generate("The quick brown", max_length=24, stop_token_ids=None)
    prompt = [tokenizer.eos_id, *tokenizer.encode_batch(["The quick brown"])[0]]
    expected = generate_ids(ours, prompt, 24 - len(prompt), make_sampler(temperature=0))
    expected = [t for t in expected if t != tokenizer.eos_id]  # keras-hub strips special tokens
    assert len(expected) >= 4
    assert text == "The quick brown" + tokenizer.decode(expected)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(use_swiglu=False), "llama3 cannot because of use_swiglu=False (llama3 has True)"),
        (dict(use_rope=False, use_rmsnorm=False, use_swiglu=False, activation="relu"),
         "gpt2 cannot because of activation='relu'"),
    ],
)
def test_a_model_no_format_holds_is_a_one_line_error(tmp_path, fields, message):
    cfg = ModelConfig(**{**dict(vocab_size=300, seq_len=16, d_model=32, num_layers=1, num_heads=4,
                                d_ff=64), **fields})
    run = write_run(tmp_path / "run", cfg)
    result = invoke("export", str(run), "--to", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_non_empty_target(lora_run, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = invoke("export", str(lora_run), "--to", str(tmp_path))
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_a_pretrained_tokenizer_keeps_its_own_end_of_text_token(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from kerastrain.data.tokenizer import load_tokenizer
    from kerastrain.model.export_hf import write_hf_tokenizer

    hf = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    hf.save(str(tmp_path / "tokenizer.json"))
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json")
    assert (tokenizer.eos_token, tokenizer.eos_id) == ("<|end_of_text|>", 4)
    (tmp_path / "out").mkdir()
    write_hf_tokenizer(tokenizer, tmp_path / "out", 32)
    config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|end_of_text|>"


def test_a_model_without_a_hugging_face_tokenizer_is_refused(tmp_path):
    from kerastrain.data.tokenizer import ByteTokenizer

    cfg = ModelConfig(vocab_size=257, seq_len=16, d_model=32, num_layers=1, num_heads=4, d_ff=64)
    run = tmp_path / "run"
    write_checkpoint(build_model(cfg), run / "final_checkpoint")
    cfg.save(run / "model_config.json")
    ByteTokenizer().save(run / "tokenizer.json")
    result = invoke("export", str(run), "--to", str(tmp_path / "out"))
    assert result.exit_code == 2 and "--tokenizer bpe" in result.output
    assert not (tmp_path / "out").exists()


def test_hugging_face_folders_go_out_and_in_without_keras_hub(tmp_path, monkeypatch):
    """The family table reads and writes Hugging Face folders itself: with keras-hub missing,
    export and --init-from's reading still work (the keras-hub format says what to install)."""
    import sys

    from kerastrain.model.hf_import import open_pretrained

    cfg = ModelConfig(vocab_size=300, seq_len=16, d_model=32, num_layers=1, num_heads=4, d_ff=64,
                      dropout_rate=0.0, num_kv_heads=2)
    run = write_run(tmp_path / "run", cfg)
    ours, tokenizer = load(run)
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # what `import keras_hub` meets uninstalled
    result = invoke("export", str(run), "--to", str(tmp_path / "hf"))
    assert result.exit_code == 0, result.output
    pretrained = open_pretrained(str(tmp_path / "hf"), 16)
    again = build_model(pretrained.config)
    pretrained.load_into(again)
    ids = np.array(tokenizer.encode_batch([PROBE]), "int32")[:, :16]
    np.testing.assert_array_equal(np.asarray(again(ids)), np.asarray(ours(ids)))
    result = invoke("export", str(run), "--to", str(tmp_path / "kh"), "--format", "keras-hub")
    assert result.exit_code != 0 and "kerastrain[hub]" in result.output
