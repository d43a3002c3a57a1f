"""``kerastrain export --verify``: the exported Hugging Face folder, run by transformers itself,
gives our model's logits.

transformers runs models in PyTorch only (version 5 dropped its TensorFlow and Flax models), so
the check needs ``torch`` besides ``transformers``; a CPU build is enough. Without them the check
is refused in one line before anything is written, rather than replaced by a re-implementation of
our own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerastrain.errors import DependencyError, VerificationError

TOLERANCE = 1e-4
PROBE_ROWS, PROBE_LENGTH = 2, 64
INSTALL = "pip install transformers torch (a CPU build of torch is enough)"


def require_transformers_with_torch() -> None:
    """One line naming the install command when transformers cannot run a model here."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise DependencyError(f"--verify runs the exported folder in transformers, which needs "
                              f"PyTorch ({exc.name} is missing): {INSTALL}") from None


def probe_batch(vocab_size: int, seq_len: int, seed: int = 0) -> np.ndarray:
    """``PROBE_ROWS`` rows of random token ids (every part of the vocabulary can turn up), as long
    as the model's context allows up to ``PROBE_LENGTH``: no padding, so no mask conventions to
    reconcile."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab_size, (PROBE_ROWS, min(seq_len, PROBE_LENGTH))).astype("int32")


def verify_hf_export(source: str | Path, folder: str | Path, tolerance: float = TOLERANCE) -> dict:
    """Logits of ``folder`` computed by ``transformers.AutoModelForCausalLM`` (float32) on a probe
    batch, against those of the model in ``source``; raises :class:`VerificationError` with the
    largest difference when it exceeds ``tolerance``."""
    require_transformers_with_torch()
    import torch
    import transformers

    from kerastrain.model.loading import load

    transformers.utils.logging.disable_progress_bar()  # one line of result, no loading bars
    model, _ = load(source, with_tokenizer=False)
    ids = probe_batch(model.config.vocab_size, model.config.seq_len)
    ours = np.asarray(model(ids), "float32")
    theirs_model = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32)
    theirs_model.eval()
    with torch.no_grad():
        theirs = theirs_model(torch.from_numpy(ids.astype("int64"))).logits.float().numpy()
    if theirs.shape != ours.shape:
        raise VerificationError(f"--verify: transformers gives logits of shape {theirs.shape}, "
                                f"the model {ours.shape}")
    diff = float(np.max(np.abs(theirs - ours)))
    if not diff <= tolerance:  # NaN fails too
        raise VerificationError(
            f"--verify: {folder}'s logits in transformers differ from the model's by up to "
            f"{diff:.3g} (tolerance {tolerance:g}) on {ids.size} probe tokens; the folder is "
            "left as written")
    return {"max_abs_diff": diff, "probe_tokens": int(ids.size),
            "transformers": transformers.__version__, "class": type(theirs_model).__name__}
