"""Qwen 2, Qwen 3, Gemma 2 and Gemma 3 folders: import, export, LoRA, mesh, generate and plan,
each held to a numpy forward written from transformers' definitions (tests/model/hf_reference)."""

from __future__ import annotations

import json

import keras_hub
import numpy as np
import pytest

from kerastrain.model.decoder import generate_ids, make_sampler
from kerastrain.model.gpt import build_model
from kerastrain.model.hf_import import open_pretrained
from kerastrain.model.hf_weights import write_hf
from kerastrain.model.loading import load
from kerastrain.model.lora import apply_lora, lora_layers
from kerastrain.model.presets import count_lora_parameters, count_parameters
from kerastrain.training.flops import matmul_parameters
from tests.helpers import invoke
from tests.model.hf_reference import CONFIGS, TEXTS, reference_logits, write_folder

FAMILIES = list(CONFIGS)
SEQ = 32


def _imported(folder, seq_len=SEQ):
    pretrained = open_pretrained(str(folder), seq_len=seq_len)
    model = build_model(pretrained.config)
    pretrained.load_into(model)
    return pretrained, model


def _ids(vocab, seed=0, shape=(2, 24)):
    return np.random.default_rng(seed).integers(0, vocab, shape).astype("int32")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_folder_imports_generates_and_exports_with_transformers_logits(tmp_path, family):
    folder = write_folder(tmp_path, family)
    pretrained, ours = _imported(folder)
    assert pretrained.architecture.name == family
    cfg = pretrained.config
    assert ours.count_params() == count_parameters(cfg)
    ids = _ids(cfg.vocab_size)  # 24 tokens: past the 6-token windows of the Gemma folders
    logits = np.asarray(ours(ids))
    expected = reference_logits(folder, ids)
    print(f"{family}: max |ours - transformers| = {np.abs(logits - expected).max():.2e}")
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    if family.startswith("qwen"):  # keras-hub's converter, an independent second reading
        theirs = keras_hub.models.Backbone.from_preset(str(folder))
        hidden = theirs({"token_ids": ids, "padding_mask": np.ones_like(ids)})
        # keras-hub's Qwen 3 is ~1e-4 from the float64 definition where ours is ~2e-6.
        np.testing.assert_allclose(np.asarray(theirs.token_embedding(hidden, reverse=True)),
                                   logits, atol=1e-4 if family == "qwen2" else 1e-3)

    # The KV-cache decoder (windows, soft-caps, q/k norms included) continues as the forward does.
    prompt = ids[0, :10].tolist()
    new = generate_ids(ours, prompt, 8, make_sampler(temperature=0), None)
    greedy = list(prompt)
    for _ in range(8):
        greedy.append(int(reference_logits(folder, np.array([greedy]))[0, -1].argmax()))
    assert new == greedy[10:]

    out = tmp_path / "exported"
    out.mkdir()
    write_hf(ours, pretrained.architecture, out, 0)
    (out / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    exported = json.loads((out / "config.json").read_text())
    assert exported["model_type"] == CONFIGS[family]["model_type"]
    back = reference_logits(out, ids)
    print(f"{family}: max |exported - ours| = {np.abs(back - logits).max():.2e}")
    np.testing.assert_allclose(back, logits, atol=1e-4)
    again, reread = _imported(out)
    assert again.config == cfg
    np.testing.assert_allclose(np.asarray(reread(ids)), logits, atol=1e-5)

    # The planner's counts: matmul weights (MFU) and LoRA adapters, against the model's own.
    kernels = sum(int(np.prod(layer.kernel.shape)) for layer in lora_layers(ours))
    assert matmul_parameters(cfg) == kernels + cfg.vocab_size * cfg.d_model
    assert apply_lora(ours, 2) == count_lora_parameters(cfg, 2)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_lora_fine_tune_of_a_family_folder_exports_a_folder_transformers_reads(tmp_path, family):
    folder = write_folder(tmp_path, family)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(t + "\n" for t in TEXTS))
    run = tmp_path / "run"
    result = invoke("run", "--seq-len", str(SEQ), "--batch-size", "2", "--warmup-steps", "1",
                    "--learning-rate", "2e-2", "--max-train-examples", "40", "--max-val-examples",
                    "4", "--log-every", "1", "--dropout-rate", "0", "--dataset-id", str(corpus),
                    "--output-dir", str(run), "--init-from", str(folder), "--use-lora",
                    "--lora-rank", "2", "--max-steps", "2")
    assert result.exit_code == 0, result.output
    assert f"Pretrained: {family}" in result.output
    if family.startswith("qwen"):  # its padded table is kept
        assert "the extra rows are padding and are kept" in " ".join(result.output.split())
    target = tmp_path / "exported"
    result = invoke("export", str(run), "--to", str(target))
    assert result.exit_code == 0, result.output
    ours, tokenizer = load(run)
    ids = np.array(tokenizer.encode_batch([TEXTS[1]]), "int32")[:, :SEQ]
    logits = np.asarray(ours(ids))
    assert not np.allclose(logits, reference_logits(folder, ids), atol=1e-4)  # LoRA trained
    np.testing.assert_allclose(reference_logits(target, ids), logits, atol=1e-4)
    config = json.loads((target / "config.json").read_text())
    assert config["architectures"] == CONFIGS[family]["architectures"]
    assert config["eos_token_id"] == tokenizer.eos_id


@pytest.mark.parametrize("family", FAMILIES)
def test_plan_counts_a_family_folders_parameters_exactly(tmp_path, family):
    folder = write_folder(tmp_path, family)
    result = invoke("plan", "--init-from", str(folder), "--seq-len", str(SEQ), "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    _, model = _imported(folder)
    assert plan["parameters"] == model.count_params()
    assert plan["model"]["num_layers"] == model.config.num_layers


def test_every_family_computes_its_logits_on_a_two_device_tensor_parallel_mesh(tmp_path):
    from tests.training.test_distribution import run_script

    folders = {family: str(write_folder(tmp_path / family, family)) for family in FAMILIES}
    script = f"""
        import numpy as np
        from kerastrain.config import DistributionConfig, RunConfig
        from kerastrain.model.gpt import build_model
        from kerastrain.model.hf_import import open_pretrained
        from kerastrain.training.distribution import MeshPlan
        from tests.model.hf_reference import reference_logits
        for family, folder in {folders!r}.items():
            pretrained = open_pretrained(folder, seq_len={SEQ})
            cfg = pretrained.config
            plan = MeshPlan(RunConfig(model=cfg, distribution=DistributionConfig(tensor_parallel=2)))
            with plan.scope(cfg):
                model = build_model(cfg)
            pretrained.load_into(model)
            sharded = model.blocks[0].attention.query.kernel.value.sharding
            assert not sharded.is_fully_replicated, sharded
            ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 24)).astype("int32")
            diff = np.abs(np.asarray(model(ids)) - reference_logits(folder, ids)).max()
            print(family, "MAXDIFF", diff)
            assert diff < 1e-4, (family, diff)
    """
    proc = run_script(script, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("MAXDIFF") == len(FAMILIES), proc.stdout


def test_a_qk_norm_model_trained_from_scratch_exports_as_qwen3(tmp_path):
    from kerastrain.config import ModelConfig
    from tests.model.test_export import write_run

    cfg = ModelConfig(vocab_size=300, seq_len=16, d_model=32, num_layers=1, num_heads=4, d_ff=64,
                      dropout_rate=0.0, qk_norm=True)
    run = write_run(tmp_path / "run", cfg)
    target = tmp_path / "hf"
    result = invoke("export", str(run), "--to", str(target))
    assert result.exit_code == 0, result.output
    assert json.loads((target / "config.json").read_text())["model_type"] == "qwen3"
    ours, _ = load(run)
    ids = _ids(ours.config.vocab_size, shape=(1, 16))
    np.testing.assert_allclose(reference_logits(target, ids), np.asarray(ours(ids)), atol=1e-4)
    result = invoke("export", str(run), "--to", str(tmp_path / "kh"), "--format", "keras-hub")
    assert result.exit_code == 2 and "--format hf only" in result.output


@pytest.mark.parametrize(("how", "message"), [
    ("auto_map", "needs custom code (config.json has auto_map"),
    ("pickled", "holds only pickled weights (pytorch_model.bin)"),
    ("layer_types", "is not one global layer every N"),
])
def test_folders_kerastrain_cannot_hold_are_one_line_errors(tmp_path, how, message):
    folder = write_folder(tmp_path, "gemma3")
    config = json.loads((folder / "config.json").read_text())
    if how == "auto_map":
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    elif how == "pickled":
        (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    else:
        config["layer_types"] = ["full_attention", "sliding_attention", "full_attention"]
    (folder / "config.json").write_text(json.dumps(config))
    result = invoke("run", "--output-dir", str(tmp_path / "run"), "--init-from", str(folder),
                    "--max-steps", "1")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert not (tmp_path / "run" / "final_checkpoint").exists()


def test_a_smollm2_folder_loads_as_the_llama_it_is(tmp_path):
    folder = write_folder(tmp_path, "smollm2")
    pretrained, ours = _imported(folder)
    assert pretrained.architecture.name == "llama3"
    assert (pretrained.config.rope_theta, pretrained.config.norm_epsilon) == (1e5, 1e-5)
    ids = _ids(pretrained.config.vocab_size)
    np.testing.assert_allclose(np.asarray(ours(ids)), reference_logits(folder, ids), atol=1e-4)


def test_a_qwen_folder_fine_tuned_on_chat_exports_its_own_template(tmp_path):
    """The folder's chat_template trains the chat data and comes back in the exported folder."""
    from kerastrain.data.chat_template import CHATML

    folder = write_folder(tmp_path, "qwen2")
    template = CHATML.replace("<|im_start|>", "<|start|>")  # the folder's own, not our ChatML
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": t[:6]}, {"role": "assistant", "content": t[6:12]}]}) + "\n"
        for t in TEXTS))
    run = tmp_path / "run"
    result = invoke("run", "--seq-len", "64", "--batch-size", "2", "--warmup-steps", "1",
                    "--max-val-examples", "2", "--dataset-id", str(chats), "--output-dir",
                    str(run), "--init-from", str(folder), "--use-lora", "--lora-rank", "2",
                    "--max-steps", "2")
    assert result.exit_code == 0, result.output
    # rich wraps long lines (at a space, or inside a path): compare with no whitespace at all
    assert f"chattemplate:{folder}" in "".join(result.output.split())
    target = tmp_path / "exported"
    assert invoke("export", str(run), "--to", str(target)).exit_code == 0
    assert json.loads((target / "tokenizer_config.json").read_text())["chat_template"] == template
    # The folder's tokenizer spelt the turn end <|im_end|> in pieces: it took a padding row.
    assert "Tokenizer: added <|im_end|> as special tokens" in " ".join(result.output.split())
    rows = json.loads((folder / "config.json").read_text())["vocab_size"]
    from tokenizers import Tokenizer

    (im_end,) = Tokenizer.from_file(str(target / "tokenizer.json")).encode(
        "<|im_end|>", add_special_tokens=False).ids
    assert im_end < rows == json.loads((target / "config.json").read_text())["vocab_size"]
    assert im_end in json.loads((target / "generation_config.json").read_text())["eos_token_id"]
    # A table without padding rows cannot take it: one line.
    folder = write_folder(tmp_path / "gemma", "gemma2")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    result = invoke("run", "--seq-len", "64", "--batch-size", "2", "--dataset-id", str(chats),
                    "--output-dir", str(tmp_path / "refused"), "--init-from", str(folder),
                    "--max-steps", "1")
    assert result.exit_code == 2 and "has no spare row for them" in result.output


# Folders written by transformers itself (config.json as transformers 5 writes it: RoPE in
# rope_parameters, per layer type for Gemma 3), one per family of the table.
_TINY = dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=0,
             eos_token_id=0, max_position_embeddings=64)
WRITTEN_BY_TRANSFORMERS = {
    "llama3": ("llama", dict(_TINY, rope_theta=5e5, rms_norm_eps=1e-5, head_dim=16)),
    "gpt2": ("gpt2", dict(vocab_size=300, n_embd=32, n_layer=3, n_head=4, n_positions=64,
                          n_inner=48, activation_function="gelu_new", pad_token_id=0,
                          bos_token_id=0, eos_token_id=0)),
    "mistral": ("mistral", dict(_TINY, sliding_window=8, rope_theta=1e6)),
    "qwen2": ("qwen2", dict(_TINY, rope_theta=1e6, tie_word_embeddings=True)),
    "qwen3": ("qwen3", dict(_TINY, head_dim=16, rope_theta=1e6)),
    "gemma2": ("gemma2", dict(_TINY, head_dim=16, sliding_window=8, query_pre_attn_scalar=12,
                              attn_logit_softcapping=5.0, final_logit_softcapping=3.0)),
    "gemma3": ("gemma3_text", dict(_TINY, head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
                                   rope_theta=2e5, rope_local_base_freq=3e4,
                                   rope_scaling={"rope_type": "linear", "factor": 4.0},
                                   layer_types=["sliding_attention", "sliding_attention",
                                                "full_attention"])),
}


@pytest.mark.torch
@pytest.mark.parametrize("family", list(WRITTEN_BY_TRANSFORMERS))
def test_a_folder_transformers_writes_imports_and_exports_with_its_logits(tmp_path, family):
    """transformers builds a random model of the family and saves it; the table imports it with
    transformers' logits, and the folder it exports gives them again in transformers."""
    import torch
    import transformers

    model_type, fields = WRITTEN_BY_TRANSFORMERS[family]
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **fields)
    theirs = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # visible norms and biases: every tensor must land in its place
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path / family
    theirs.save_pretrained(str(folder))
    (folder / "tokenizer.json").write_text("{}")  # open_pretrained needs one; unused here
    pretrained, ours = _imported(folder)
    assert pretrained.architecture.name == family
    ids = _ids(300, shape=(2, 24))  # past the 8-token windows
    with torch.no_grad():
        expected = theirs(torch.from_numpy(ids.astype("int64"))).logits.numpy()
    logits = np.asarray(ours(ids))
    print(f"{family}: max |ours - transformers| = {np.abs(logits - expected).max():.2e}")
    np.testing.assert_allclose(logits, expected, atol=1e-4)

    out = tmp_path / "exported"
    out.mkdir()
    write_hf(ours, pretrained.architecture, out, 0)
    back = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert type(back) is type(theirs)
    with torch.no_grad():
        again = back(torch.from_numpy(ids.astype("int64"))).logits.numpy()
    np.testing.assert_allclose(again, logits, atol=1e-4)
