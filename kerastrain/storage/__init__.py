"""Storage: backends by URL scheme (the plugin interface and the local ``file`` backend), checkpoint
manifests, background uploads, remote checkpoints. Imports only the core.

The backend interface is re-exported here: plugins write ``from kerastrain.storage import ...``.
"""

from kerastrain.storage.backends import (  # noqa: F401  (the public interface for plugins)
    DEFAULT_PART_SIZE,
    LocalStorage,
    StorageBackend,
    StorageURL,
    backend_for,
    parse_url,
    redact,
    redact_logs,
    translated_errors,
)
