"""Built-in plugin: upload each saved checkpoint to cloud storage while training goes on.

Active when ``--cloud-provider`` is set. Checkpoints go to ``PROVIDER://BUCKET/PREFIX/<folder
name>`` (e.g. ``s3://runs/checkpoints/checkpoint_step_20``) in a background thread; at the end of
training the remaining uploads finish with a progress bar (waiting at most ``--upload-timeout``
seconds) and whatever did not upload is listed; its folders go into the summary's ``not_uploaded``
(``kerastrain run`` then exits with :data:`kerastrain.errors.EXIT_NOT_UPLOADED`). Folders not
yet uploaded are named by ``checkpoints_in_use``, so ``--keep-last`` never deletes one.

The run's uploader lives on the run (``run.plugin_state``), not in this module.
"""

from __future__ import annotations

from typing import Any

from kerastrain.hookspecs import hookimpl


def uploader_for(run: Any):
    """The run's :class:`kerastrain.storage.uploader.CheckpointUploader`, or None when not uploading."""
    return run.plugin_state.get(__name__)


@hookimpl
def on_train_start(run) -> None:
    cloud = run.config.cloud
    if not cloud.provider:
        return
    from kerastrain.storage.backends import remote_root
    from kerastrain.storage.uploader import CheckpointUploader

    root = remote_root(cloud)
    run.plugin_state[__name__] = CheckpointUploader(root, cloud, console=run.console)
    run.console.print(f"Checkpoints will be uploaded to {root}", highlight=False)


@hookimpl
def on_checkpoint_saved(run, path, step: int, kind: str) -> None:
    uploader = uploader_for(run)
    if uploader is not None:
        uploader.submit(path)


@hookimpl
def checkpoints_in_use(run) -> list:
    uploader = uploader_for(run)
    return sorted(uploader.pending_dirs()) if uploader is not None else []


@hookimpl
def on_train_end(run, logs: dict) -> None:
    uploader = run.plugin_state.pop(__name__, None)
    if uploader is not None:
        failed = uploader.finish(run.config.cloud.upload_timeout)
        if failed and logs is not None:
            logs["not_uploaded"] = [str(job.local_dir) for job in failed]
            logs["remote"] = str(uploader.remote)
