"""kerastrain plugin: the ``tfds`` data source (``--dataset-id tfds:NAME[/CONFIG][:VERSION]``).

Reads prepared TensorFlow Datasets in ``array_record`` format through ``tfds.data_source``-style
random access, so TensorFlow is never needed. See :mod:`kerastrain_tfds.source`.
"""

from __future__ import annotations

from kerastrain.hookspecs import hookimpl
from kerastrain_tfds.source import TFDSSource

__all__ = ["TFDSSource", "register_data_sources"]


@hookimpl
def register_data_sources(register):
    register(TFDSSource())
