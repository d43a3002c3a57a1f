"""What ``--init-from`` names, decided once: nothing, a kerastrain checkpoint or a model folder.

A model folder (Hugging Face or keras-hub: it has ``config.json``, or is a hub name) gives the run
its shape, weights and tokenizer (:mod:`kerastrain.model.hf_import`); a kerastrain checkpoint its
weights and tokenizer. The rest of the run asks this record, never the path again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kerastrain.model.folder_checks import refuse_unsafe_folder
from kerastrain.model.hf_import import is_pretrained_folder


@dataclass(frozen=True)
class InitFrom:
    """``--init-from`` as resolved: ``source`` as given (None: random weights)."""

    source: str | None = None
    is_model_folder: bool = False

    @property
    def model_folder(self) -> str | None:
        """The Hugging Face or keras-hub folder to adopt, or None."""
        return self.source if self.is_model_folder else None

    @property
    def checkpoint(self) -> Path | None:
        """The kerastrain checkpoint to start from, or None."""
        return Path(self.source) if self.source and not self.is_model_folder else None


def resolve_init_from(config) -> InitFrom:
    """What ``config.train.init_from`` is; a model folder that needs custom code or holds only
    pickled weights is refused here, in one line."""
    source = config.train.init_from
    if not source:
        return InitFrom()
    if not is_pretrained_folder(source):
        return InitFrom(source)
    refuse_unsafe_folder(source)
    return InitFrom(source, is_model_folder=True)
