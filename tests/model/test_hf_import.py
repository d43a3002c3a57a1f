"""``--init-from`` a Hugging Face folder: tiny random Llama 3 and GPT-2 built with keras-hub,
written by keras-hub's exporter, LoRA fine-tuned here, exported back and re-imported."""

from __future__ import annotations

import json
import shutil

import keras
import keras_hub
import numpy as np
import pytest

from kerastrain.data.tokenizer import BPETokenizer, train_byte_level_bpe
from kerastrain.model.loading import load
from tests.helpers import invoke
from tests.model.test_export import PROBE, TEXTS

TRAIN = ["--seq-len", "32", "--batch-size", "4", "--warmup-steps", "1", "--learning-rate", "2e-2",
         "--max-train-examples", "200", "--max-val-examples", "8", "--log-every", "1",
         "--dropout-rate", "0"]


def _hf_folder(root, kind: str):
    """A random keras-hub backbone of ``kind`` exported as a Hugging Face folder + our tokenizer."""
    keras.utils.set_random_seed(5)
    tokenizer = BPETokenizer(train_byte_level_bpe(TEXTS, 300))
    vocab = tokenizer.vocab_size
    if kind == "llama3":
        backbone = keras_hub.models.Llama3Backbone(
            vocabulary_size=vocab, num_layers=2, num_query_heads=4, num_key_value_heads=4,
            hidden_dim=32, intermediate_dim=64, tie_word_embeddings=True, dtype="float32")
        task = keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=None)
    else:
        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=vocab, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=128,
            max_sequence_length=64, dtype="float32")
        task = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    folder = root / f"{kind}-hf"
    task.export_to_transformers(str(folder))
    tokenizer.save(folder / "tokenizer.json")
    return folder, backbone


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r and r.get("kind", "train") == "train"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama3", "gpt2"])
def test_lora_fine_tune_of_a_hf_folder_trains_adapters_only_and_exports_back(tmp_path, kind):
    folder, original = _hf_folder(tmp_path, kind)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(t + "\n" for t in TEXTS))
    run = tmp_path / "run"
    result = invoke("run", *TRAIN, "--dataset-id", str(corpus), "--output-dir", str(run),
                    "--init-from", str(folder), "--use-lora", "--lora-rank", "4",
                    "--max-steps", "8")
    assert result.exit_code == 0, result.output
    assert f"Pretrained: {kind}" in result.output
    losses = _losses(run)
    assert len(losses) == 8 and np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.02, losses

    # Only adapters changed: the base kernels kept beside them are the folder's, and every
    # weight that takes no adapter (embeddings, norms) is unchanged in the saved model.
    ours, tokenizer = load(run)
    start, _ = load(run, with_tokenizer=False)
    from kerastrain.model.hf_import import open_pretrained

    open_pretrained(str(folder), 32).load_into(start)
    import jax
    import orbax.checkpoint as ocp

    saved = ocp.PyTreeCheckpointer().restore((run / "final_checkpoint" / "state" / "model").absolute())
    flat = {"/".join(k.key for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(saved)[0]}
    adapted = {k[: -len("lora_kernel_a")] for k in flat if k.endswith("/lora_kernel_a")}
    bases = {k: v for k, v in flat.items() if k.endswith("/kernel") and k[:-len("kernel")] in adapted}
    assert bases
    merged_differs = False
    for before, after in zip(start.weights, ours.weights, strict=True):
        if before.path in bases:
            np.testing.assert_array_equal(bases[before.path], np.asarray(before.value))
            merged_differs |= not np.allclose(np.asarray(after.value), np.asarray(before.value))
        else:
            np.testing.assert_array_equal(np.asarray(after.value), np.asarray(before.value))
    assert merged_differs, "the fine-tune changed nothing"

    target = tmp_path / "exported"
    result = invoke("export", str(run), "--to", str(target))
    assert result.exit_code == 0, result.output
    backbone = keras_hub.models.Backbone.from_preset(str(target))
    assert type(backbone) is type(original)
    ids = np.array(tokenizer.encode_batch([PROBE]), "int32")[:, :32]
    hidden = backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    theirs = np.asarray(backbone.token_embedding(hidden, reverse=True))
    np.testing.assert_allclose(theirs, np.asarray(ours(ids)), atol=1e-4)


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return _hf_folder(tmp_path_factory.mktemp("bad"), "llama3")[0]


def _broken(tmp_path, llama_folder, how: str):
    folder = tmp_path / how
    shutil.copytree(llama_folder, folder)
    if how == "unsupported":
        config = json.loads((folder / "config.json").read_text())
        config.update(model_type="bert", architectures=["BertForMaskedLM"])
        (folder / "config.json").write_text(json.dumps(config))
    elif how == "no-tokenizer":
        (folder / "tokenizer.json").unlink()
    elif how == "vocab":  # more tokens than embedding rows (fewer is a padded table: kept)
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.add_special_tokens([f"<|extra_{i}|>" for i in range(8)])
        tok.save(str(folder / "tokenizer.json"))
    elif how == "corrupt":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    return str(folder)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("unsupported", "no installed architecture imports model_type 'bert'"),
        ("no-tokenizer", "has no tokenizer.json"),
        ("vocab", "the folder's tokenizer and weights do not belong together"),
        ("corrupt", "cannot load the model in"),
        ("hub-id", "kerastrain does not download models"),
    ],
)
def test_bad_init_from_folders_are_one_line_errors(tmp_path, llama_folder, how, message):
    source = "meta-llama/Llama-3.2-1B" if how == "hub-id" else _broken(tmp_path, llama_folder, how)
    result = invoke("run", *TRAIN, "--output-dir", str(tmp_path / "run"), "--init-from", source,
                    "--use-lora", "--max-steps", "2")
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and message in error[0], result.output


def test_a_llama_3_with_grouped_query_attention_and_scaled_rope_maps_exactly_both_ways(tmp_path):
    """A keras-hub Llama 3 (grouped-query heads, RoPE base 5e5, Llama 3 frequency scaling, epsilon
    1e-5, untied) written by keras-hub's exporter imports with keras-hub's logits and greedy
    decode; exported back, keras-hub reads the same model."""
    from kerastrain.model.decoder import generate_ids, make_sampler
    from kerastrain.model.families import importing_family
    from kerastrain.model.gpt import build_model
    from kerastrain.model.hf_weights import config_from_hf, load_hf_weights, write_hf
    from tests.model.test_export import _their_greedy

    keras.utils.set_random_seed(7)
    theirs = keras_hub.models.Llama3Backbone(
        vocabulary_size=97, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
        intermediate_dim=48, rope_max_wavelength=500000, layer_norm_epsilon=1e-5,
        rope_frequency_adjustment_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
        rope_pretraining_sequence_length=16, tie_word_embeddings=False, dtype="float32")
    rng = np.random.default_rng(0)
    for v in theirs.weights:
        v.assign(np.asarray(v.value) * 8 + rng.normal(0, 0.05, v.shape).astype("float32"))
    folder = tmp_path / "llama"
    keras_hub.models.Llama3CausalLM(theirs, preprocessor=None).export_to_transformers(str(folder))
    family = importing_family("llama")
    cfg = config_from_hf(family, json.loads((folder / "config.json").read_text()), 48)
    assert (cfg.num_kv_heads, cfg.rope_theta, cfg.norm_epsilon) == (2, 500000.0, 1e-5)
    ours = build_model(cfg)
    load_hf_weights(ours, folder, family)
    ids = rng.integers(0, 97, (2, 40)).astype("int32")  # past the 16 "pretraining" positions
    np.testing.assert_allclose(np.asarray(ours(ids)), _their_logits(theirs, ids), atol=1e-4)
    prompt = ids[0, :6].tolist()
    mine = generate_ids(ours, prompt, 10, make_sampler(temperature=0), None)
    assert mine == _their_greedy(keras_hub.models.Llama3CausalLM(theirs, preprocessor=None), prompt, 10)
    out = tmp_path / "back"
    out.mkdir()
    write_hf(ours, family, out)
    # keras-hub's converter drops rms_norm_eps: given back as kerastrain's keras-hub export does
    back = keras_hub.models.Backbone.from_preset(str(out), layer_norm_epsilon=1e-5)
    np.testing.assert_allclose(_their_logits(back, ids), _their_logits(theirs, ids), atol=1e-5)


def _their_logits(backbone, ids):
    hidden = backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    return np.asarray(backbone.token_embedding(hidden, reverse=True))


@pytest.mark.slow
def test_a_keras_hub_preset_folder_fine_tunes_with_its_own_tokenizer(tmp_path):
    from kerastrain.config import ModelConfig
    from kerastrain.data.tokenizer import load_tokenizer
    from tests.model.test_export import write_run

    cfg = ModelConfig(vocab_size=300, seq_len=32, d_model=32, num_layers=2, num_heads=4, d_ff=64,
                      dropout_rate=0.0)
    base = write_run(tmp_path / "base", cfg)
    preset = tmp_path / "preset"
    assert invoke("export", str(base), "--to", str(preset), "--format", "keras-hub").exit_code == 0
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(t + "\n" for t in TEXTS))
    run = tmp_path / "run"
    result = invoke("run", *TRAIN, "--dataset-id", str(corpus), "--output-dir", str(run),
                    "--init-from", str(preset), "--use-lora", "--lora-rank", "2", "--max-steps", "3")
    assert result.exit_code == 0, result.output
    assert "Pretrained: llama3" in result.output
    texts = [PROBE, "unseen wörds & symbols 123 <|endoftext|>"]
    original, converted = load_tokenizer(base / "tokenizer.json"), load_tokenizer(run / "tokenizer.json")
    assert converted.encode_batch(texts) == original.encode_batch(texts)
    assert converted.eos_id == original.eos_id


def test_a_mistral_folder_imports_and_exports_with_its_sliding_window(tmp_path):
    """keras-hub's exporter writes a Mistral (window 16); read at --seq-len 48 every layer attends
    within the window, as transformers' definition (tests/model/hf_reference) does, and the
    model exports back as the Mistral it is."""
    from kerastrain.model.gpt import build_model
    from kerastrain.model.hf_import import open_pretrained
    from tests.model.hf_reference import reference_logits

    keras.utils.set_random_seed(11)
    tokenizer = BPETokenizer(train_byte_level_bpe(TEXTS, 300))
    theirs = keras_hub.models.MistralBackbone(
        vocabulary_size=tokenizer.vocab_size, num_layers=2, num_query_heads=4,
        num_key_value_heads=2, hidden_dim=32, intermediate_dim=48, rope_max_wavelength=1e6,
        layer_norm_epsilon=1e-5, sliding_window=16, dtype="float32")
    rng = np.random.default_rng(1)
    for v in theirs.weights:
        v.assign(np.asarray(v.value) * 8 + rng.normal(0, 0.05, v.shape).astype("float32"))
    folder = tmp_path / "mistral-hf"
    keras_hub.models.MistralCausalLM(backbone=theirs, preprocessor=None).export_to_transformers(str(folder))
    tokenizer.save(folder / "tokenizer.json")

    pretrained = open_pretrained(str(folder), seq_len=48)
    assert pretrained.architecture.name == "mistral"
    assert (pretrained.config.num_kv_heads, pretrained.config.sliding_window) == (2, 16)
    ours = build_model(pretrained.config)
    pretrained.load_into(ours)
    ids = rng.integers(0, tokenizer.vocab_size, (2, 48)).astype("int32")
    logits = np.asarray(ours(ids))
    # float32 against float64 on weights scaled x8 (logits ~5): a few of the 28,800 differ by
    # 2.5e-4; without the window they move by more than 1e-2 (below).
    np.testing.assert_allclose(logits, reference_logits(folder, ids), atol=1e-3)
    without = dict(json.loads((folder / "config.json").read_text()), sliding_window=None)
    (folder / "config.json").write_text(json.dumps(without))
    assert not np.allclose(reference_logits(folder, ids), logits, atol=1e-2)  # the window matters

    from kerastrain.model.families import export_family

    assert export_family(pretrained.config).name == "mistral"
