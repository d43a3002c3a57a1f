"""``kerastrain plot``: the loss and learning-rate curves of a run, from its metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from kerastrain.errors import UserError
from kerastrain.training.metrics_log import read_metrics


def plot_run(output_dir: str | Path, png: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    records = read_metrics(output_dir)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    if not train:
        raise UserError(f"{output_dir} has no training metrics (metrics.jsonl) to plot")
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    if evals:
        ax_loss.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-",
                     label="validation loss")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:orange")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.suptitle(f"kerastrain: {output_dir.name}")
    fig.tight_layout()
    path = Path(png) if png else output_dir / "training_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
