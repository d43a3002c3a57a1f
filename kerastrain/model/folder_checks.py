"""What kerastrain refuses in a model folder before reading it (``--init-from``): custom code
(``auto_map``: transformers would import Python files from the folder) and pickled weights
(``.bin`` / ``.pt``: unpickling runs code). Safetensors hold only tensors."""

from __future__ import annotations

import json
from pathlib import Path

from kerastrain.errors import CheckpointError, ConfigError

PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def refuse_unsafe_folder(folder: str | Path) -> None:
    """One line, before anything is written, for a folder that needs custom code or holds only
    pickled weights."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except ValueError:
            continue  # the reader reports a broken file
        if isinstance(data, dict) and data.get("auto_map"):
            raise ConfigError(
                f"{folder} needs custom code ({name} has auto_map: "
                f"{', '.join(sorted(data['auto_map']))}); kerastrain runs no code from a model "
                "folder: use a folder of a supported family (`kerastrain plugins` lists the "
                "architectures)")
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for pattern in PICKLED for p in folder.glob(pattern))
        if pickled:
            raise CheckpointError(
                f"{folder} holds only pickled weights ({', '.join(pickled[:3])}); kerastrain "
                "reads safetensors only (unpickling can run code): download the model's "
                "safetensors files")
