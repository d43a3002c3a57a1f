"""The data-source interface plugins implement, at the path docs/plugins.md documents.

It lives in :mod:`kerastrain.data.sources`; this module only re-exports it.
"""

from kerastrain.data.sources import (  # noqa: F401
    DEFAULT_SOURCE,
    FALLBACK_SOURCE,
    DataSource,
    DecodeErrorCounter,
    Documents,
    SourceRequest,
    parse_dataset_id,
)
