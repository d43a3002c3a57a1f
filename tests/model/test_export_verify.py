"""``kerastrain export --verify``: transformers itself (on PyTorch) runs the exported folder and
must give our logits within 1e-4; a folder that does not is a one-line error with the largest
difference; without PyTorch the check is refused in one line, before anything is written."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from kerastrain.config import ModelConfig
from tests.helpers import invoke
from tests.model.test_export import write_run

LLAMA = ModelConfig(vocab_size=300, seq_len=32, d_model=32, num_layers=2, num_heads=4, d_ff=64,
                    dropout_rate=0.0)
GPT2 = LLAMA.replace(d_ff=128, use_rmsnorm=False, use_swiglu=False, use_rope=False,
                     activation="gelu_tanh")


@pytest.fixture(scope="module")
def torch_and_transformers():
    """These tests need transformers to run a model: they fail (never skip) without PyTorch. They
    carry the ``torch`` mark, which the default run leaves out (PyPI's Linux torch is a CUDA build
    of several GB): ``.ci/run`` installs a CPU torch and runs them with ``pytest -m torch``."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        pytest.fail(f"{exc.name} is missing: pip install torch (a CPU build is enough; .ci/run "
                    "installs one)", pytrace=False)
    return torch, transformers


@pytest.mark.torch
@pytest.mark.parametrize(("cfg", "hf_class"), [
    (LLAMA, "LlamaForCausalLM"), (GPT2, "GPT2LMHeadModel"),
    (LLAMA.replace(qk_norm=True), "Qwen3ForCausalLM"),
    # GPT-2 with the exact GELU, without biases (written as zeros) and d_ff != 4 x d_model
    (GPT2.replace(d_ff=48, activation="gelu"), "GPT2LMHeadModel"),
    (LLAMA.replace(sliding_window=8, num_kv_heads=2), "MistralForCausalLM"),  # 32 tokens > 8
], ids=["llama", "gpt2", "qwen3", "gpt2-exact-gelu", "mistral"])
def test_an_export_verifies_against_transformers(torch_and_transformers, tmp_path, cfg, hf_class):
    run = write_run(tmp_path / "run", cfg)
    result = invoke("export", str(run), "--to", str(tmp_path / "hf"), "--verify")
    assert result.exit_code == 0, result.output
    assert f"Verified: {hf_class} (transformers " in result.output
    assert "on 64 probe tokens" in result.output  # 2 rows of the model's 32 positions


@pytest.mark.torch
def test_the_check_compares_with_what_transformers_computes(torch_and_transformers, tmp_path):
    """The same probe logits by hand from transformers and from our model; then one weight of
    the folder changed: the check fails in one line that gives the difference it found."""
    torch, transformers = torch_and_transformers
    from safetensors.numpy import load_file, save_file

    from kerastrain.errors import VerificationError
    from kerastrain.model.export_verify import probe_batch, verify_hf_export
    from kerastrain.model.loading import load

    run, folder = write_run(tmp_path / "run", LLAMA), tmp_path / "hf"
    assert invoke("export", str(run), "--to", str(folder)).exit_code == 0
    model, _ = load(run)
    ids = probe_batch(model.config.vocab_size, model.config.seq_len)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    with torch.no_grad():
        theirs = hf(torch.from_numpy(ids.astype("int64"))).logits.numpy()
    ours = np.asarray(model(ids))
    found = verify_hf_export(run, folder)["max_abs_diff"]
    assert found == pytest.approx(float(np.abs(theirs - ours).max()), abs=1e-7)
    assert found <= 1e-4

    weights = load_file(str(folder / "model.safetensors"))
    name = next(k for k in weights if k.endswith("layers.1.mlp.down_proj.weight"))
    weights[name] = weights[name] + np.float32(0.01)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(VerificationError) as caught:
        verify_hf_export(run, folder)
    message = caught.value.format_message()
    assert "differ from the model's by up to" in message and "\n" not in message
    shown = float(message.split("by up to ")[1].split(" ")[0])
    assert shown > 1e-3


def test_without_torch_verify_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", LLAMA)
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` meets uninstalled
    result = invoke("export", str(run), "--to", str(tmp_path / "hf"), "--verify")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: --verify runs the exported folder in transformers, which needs PyTorch (torch is "
        "missing): pip install transformers torch (a CPU build of torch is enough)"]
    assert not (tmp_path / "hf").exists()
    result = invoke("export", str(run), "--to", str(tmp_path / "p"), "--format", "keras-hub",
                    "--verify")
    assert result.exit_code == 2 and "applies to --format hf" in result.output
