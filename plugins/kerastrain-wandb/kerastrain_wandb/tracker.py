"""One kerastrain run mirrored into one W&B run (see the package docstring)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from kerastrain.training.metrics_log import numeric_fields

RUN_ID_FILE = "wandb_run_id"


def choose_mode() -> tuple[str, str | None]:
    """(mode, why offline): ``WANDB_MODE`` when set; online only with a key and a reachable
    host, since an unreachable host would make wandb retry for minutes."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], None
    import wandb

    key = os.environ.get("WANDB_API_KEY")
    if not key:
        try:
            key = wandb.Api(timeout=3).api_key  # from `wandb login` (~/.netrc)
        except Exception:  # no key configured: wandb raises its own usage errors
            key = None
    if not key:
        return "offline", "no W&B API key (wandb login or WANDB_API_KEY)"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        socket.create_connection((host.hostname, host.port or 443), timeout=3).close()
    except OSError:
        return "offline", f"{host.hostname} cannot be reached"
    return "online", None


class WandbTracker:
    """Config at the start, each record as the run logs it (the one ``metrics.jsonl`` gets), the
    final checkpoint, and the run's end."""

    name = "wandb"  # --tracker wandb
    label = "W&B"

    def __init__(self, wandb_run) -> None:
        self.wandb_run = wandb_run

    @classmethod
    def start(cls, run) -> WandbTracker:
        import wandb

        output_dir = Path(run.output_dir).resolve()
        mode, why = choose_mode()
        id_file = output_dir / RUN_ID_FILE
        metrics = output_dir / "metrics.jsonl"
        resuming = metrics.exists() and metrics.stat().st_size > 0  # not fresh, not --overwrite
        run_id = id_file.read_text().strip() if resuming and id_file.exists() else None
        wandb_run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "kerastrain", name=output_dir.name,
            dir=str(output_dir), config=run.config.to_dict(), mode=mode, id=run_id,
            resume="allow", settings=wandb.Settings(silent=True, console="off"),
        )
        id_file.write_text(wandb_run.id + "\n")
        if why:
            run.say(f"W&B: offline ({why}); logging to {output_dir / 'wandb'}, upload later "
                    "with `wandb sync`")
        else:
            run.say(f"W&B: logging run {wandb_run.id} ({mode})")
        return cls(wandb_run)

    def log(self, record: dict) -> None:
        """Log one record's figures (and a sample's text) at its step."""
        if record.get("kind") == "summary":
            return  # the summary repeats the last figures under other names
        values: dict = {}
        if record.get("kind") == "sample" and isinstance(record.get("text"), str):
            values["sample"] = record["text"]
        values.update(numeric_fields(record))
        if values:
            self.wandb_run.log(values, step=int(record.get("step", 0)))

    def log_checkpoint(self, path) -> None:
        if os.environ.get("KERASTRAIN_WANDB_LOG_CHECKPOINT", "1") != "0":
            import wandb

            artifact = wandb.Artifact(f"{self.wandb_run.name}-final", type="model")
            artifact.add_dir(str(path))
            self.wandb_run.log_artifact(artifact)

    def finish(self, summary: dict) -> None:
        reason = (summary or {}).get("reason")
        self.wandb_run.finish(exit_code=0 if reason and reason != "interrupted" else 1)
