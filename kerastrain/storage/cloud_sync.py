"""Upload each sealed checkpoint to cloud storage while training goes on (``--cloud-provider``).

Checkpoints go to ``PROVIDER://BUCKET/PREFIX/<folder name>`` (e.g.
``s3://runs/checkpoints/checkpoint_step_20``) in a background thread; at the end of training the
remaining uploads finish with a progress bar (waiting at most ``--upload-timeout`` seconds) and
whatever did not upload is listed and returned by :meth:`CloudSync.finish`: the run puts it in its
summary's ``not_uploaded`` and ``kerastrain run`` exits with
:data:`kerastrain.errors.EXIT_NOT_UPLOADED`. Folders not yet uploaded are :meth:`CloudSync.in_use`,
so ``--keep-last`` never deletes one. The training loop calls it where each thing happens.
"""

from __future__ import annotations

from pathlib import Path


class CloudSync:
    """The uploads of one run to ``cloud`` (a :class:`kerastrain.config.CloudConfig`)."""

    def __init__(self, cloud, console) -> None:
        from kerastrain.storage.backends import remote_root
        from kerastrain.storage.uploader import CheckpointUploader

        self.cloud = cloud
        root = remote_root(cloud)
        self.uploader = CheckpointUploader(root, cloud, console=console)
        console.print(f"Checkpoints will be uploaded to {root}", highlight=False)

    def submit(self, path: Path) -> None:
        """Upload the sealed checkpoint ``path`` in the background."""
        self.uploader.submit(path)

    def in_use(self) -> set[Path]:
        """Checkpoint folders not uploaded yet: pruning must keep them."""
        return {Path(p) for p in self.uploader.pending_dirs()}

    def finish(self) -> dict:
        """Wait for the uploads (at most ``--upload-timeout`` s); returns what did not upload, as
        the summary's ``not_uploaded`` and ``remote``, or nothing."""
        failed = self.uploader.finish(self.cloud.upload_timeout)
        if not failed:
            return {}
        return {"not_uploaded": [str(job.local_dir) for job in failed],
                "remote": str(self.uploader.remote)}


def start_uploads(cloud, console) -> CloudSync | None:
    """The run's uploads when ``--cloud-provider`` is set, else None."""
    return CloudSync(cloud, console) if cloud.provider else None
