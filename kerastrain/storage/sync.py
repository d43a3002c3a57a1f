"""``kerastrain sync OUTPUT_DIR``: upload later what a run could not upload while it trained.

Every complete local checkpoint of the output directory (a folder holding a ``manifest.json``
whose files match it) that is missing or incomplete under the run's remote is uploaded, files
first and ``manifest.json`` last, by the same uploader a run uses; checkpoints already complete
remotely are only checked, not sent again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from kerastrain.config import CloudConfig
from kerastrain.errors import ConfigError
from kerastrain.storage.manifest import MANIFEST_NAME, is_complete

RUN_CONFIG = "run_config.json"


def saved_cloud_config(output_dir: Path, overrides: dict[str, Any]) -> CloudConfig:
    """The cloud settings the run in ``output_dir`` used (``run_config.json``), with the given
    non-empty ``overrides`` (cloud option values by field name) applied. Secrets are never saved:
    they come from the overrides (or their environment variables)."""
    from kerastrain.config import RunConfig

    data: dict = {}
    path = output_dir / RUN_CONFIG
    if path.exists():
        data = json.loads(path.read_text())
    cloud = RunConfig.from_dict({"cloud": data.get("cloud", {})}).cloud
    given = {k: v for k, v in overrides.items() if v not in (None, "", (), {})}
    own = {f.name for f in dataclasses.fields(CloudConfig)}
    cloud = dataclasses.replace(
        cloud, **{k: v for k, v in given.items() if k in own},
        extra={**cloud.extra, **{k: v for k, v in given.items() if k not in own}})
    if not cloud.provider or not cloud.bucket:
        raise ConfigError(
            f"{output_dir} names no remote (its {RUN_CONFIG} has no cloud provider/bucket); "
            "pass --cloud-provider and --cloud-bucket"
        )
    return cloud


def complete_local_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoint folders directly in ``output_dir`` that are complete (manifest and files match),
    oldest first; hidden folders (downloads, temporary copies) are skipped."""
    found = [
        p
        for p in output_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()
    ]
    return sorted(
        (p for p in found if is_complete(p)), key=lambda p: (p / MANIFEST_NAME).stat().st_mtime
    )


def sync_output_dir(output_dir: Path, cloud: CloudConfig, console, timeout: float | None):
    """Upload every complete local checkpoint that the remote lacks; returns the upload jobs
    that did not complete (empty when everything is remote)."""
    from kerastrain.storage.probe import open_remote
    from kerastrain.storage.uploader import CheckpointUploader

    local = complete_local_checkpoints(output_dir)
    root, backend = open_remote(cloud)
    if not local:
        console.print(f"No complete checkpoint in {output_dir}; nothing to upload", highlight=False)
        return []
    console.print(
        f"Syncing {len(local)} checkpoint(s) from {output_dir} to {root}", highlight=False
    )
    uploader = CheckpointUploader(root, cloud, backend=backend, console=console)
    for folder in local:
        uploader.submit(folder)
    return uploader.finish(timeout)
