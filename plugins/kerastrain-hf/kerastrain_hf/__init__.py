"""kerastrain plugin: the ``hf`` data source (Hugging Face hub datasets and local files).

``--dataset-id`` values that name no other source come here: a hub id such as
``roneneldan/TinyStories``, a folder, a ``.txt``/``.json``/``.jsonl``/``.parquet``/``.csv`` file or a
glob of them. See :mod:`kerastrain_hf.source` for how a location is resolved.
"""

from __future__ import annotations

from kerastrain.hookspecs import hookimpl
from kerastrain_hf.source import HFSource

__all__ = ["HFSource", "register_data_sources"]


@hookimpl
def register_data_sources(register):
    register(HFSource())
