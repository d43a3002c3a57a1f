"""Built-in plugin: upload each saved checkpoint to cloud storage while training goes on.

Active when ``--cloud-provider`` is set. Checkpoints go to ``PROVIDER://BUCKET/PREFIX/<folder
name>`` (e.g. ``s3://runs/checkpoints/checkpoint_step_20``) in a background thread; at the end of
training the remaining uploads finish with a progress bar (waiting at most ``--upload-timeout``
seconds) and whatever did not upload is listed; its folders go into the summary's ``not_uploaded``
(``kerastrain run`` then exits with :data:`kerastrain.errors.EXIT_NOT_UPLOADED`).
"""

from __future__ import annotations

from typing import Any

from kerastrain.hookspecs import hookimpl

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
        failed = uploader.finish(run.config.cloud.upload_timeout)
        if failed and logs is not None:
            logs["not_uploaded"] = [str(job.local_dir) for job in failed]
            logs["remote"] = str(uploader.remote)
