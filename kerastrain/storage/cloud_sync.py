"""Built-in plugin: upload each saved checkpoint to cloud storage while training goes on.

Active when ``--cloud-provider`` is set. Checkpoints go to ``PROVIDER://BUCKET/PREFIX/<folder
name>`` (e.g. ``s3://runs/checkpoints/checkpoint_step_20``) in a background thread; at the end of
training the remaining uploads finish with a progress bar and whatever did not upload is listed.
"""

from __future__ import annotations

import os
from typing import Any

from kerastrain.hookspecs import hookimpl

# How long the end of training waits for uploads; override with this environment variable.
FINISH_TIMEOUT_ENV = "KERASTRAIN_UPLOAD_TIMEOUT"
DEFAULT_FINISH_TIMEOUT_S = 1800.0

_uploaders: dict[int, Any] = {}  # id(run) -> CheckpointUploader


def uploader_for(run: Any):
    """The run's :class:`kerastrain.storage.uploader.CheckpointUploader`, or None when not uploading.
    The trainer may ask it for ``pending_dirs()`` before deleting old checkpoints."""
    return _uploaders.get(id(run))


@hookimpl
def on_train_start(run) -> None:
    cloud = run.config.cloud
    if not cloud.provider:
        return
    from kerastrain.storage.backends import remote_root
    from kerastrain.storage.uploader import CheckpointUploader

    root = remote_root(cloud)
    _uploaders[id(run)] = CheckpointUploader(root, cloud, console=run.console)
    run.console.print(f"Checkpoints will be uploaded to {root}", highlight=False)


@hookimpl
def on_checkpoint_saved(run, path, step: int, kind: str) -> None:
    uploader = uploader_for(run)
    if uploader is not None:
        uploader.submit(path)


@hookimpl
def on_train_end(run, logs: dict) -> None:
    uploader = _uploaders.pop(id(run), None)
    if uploader is not None:
        timeout = float(os.environ.get(FINISH_TIMEOUT_ENV, DEFAULT_FINISH_TIMEOUT_S))
        uploader.finish(timeout)
