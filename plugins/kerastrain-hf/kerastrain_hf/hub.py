"""The Hugging Face Hub side of the ``hf`` source: a fast probe and the local-cache fallback."""

from __future__ import annotations

import logging
import time

from kerastrain.errors import DataError

PROBE_TIMEOUT_S = 3.0
LOCAL_HINT = (
    "to train on local files pass --dataset-id path/to/*.jsonl (or .txt/.parquet/.csv files, a "
    "glob or a folder)"
)
log = logging.getLogger("kerastrain.hf")


def probe_hub(repo_id: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast, with one line, when the hub cannot be reached or has no such dataset.

    Skipped under ``HF_HUB_OFFLINE=1``, where ``datasets`` reads its local cache at once.
    """
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    url = f"{constants.ENDPOINT}/api/datasets/{repo_id}"
    started = time.monotonic()
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError as exc:
        hub_code = exc.headers.get("X-Error-Code") if exc.headers else None
        if exc.code == 404 and hub_code == "RepoNotFound":
            raise DataError(
                f"dataset {repo_id} was not found on the Hugging Face Hub; {LOCAL_HINT}"
            ) from None
        if exc.code in (401, 403):
            return  # private, gated, or missing for an anonymous request: ``datasets`` uses the
            # user's token and reports what it finds
        # Any other answer (5xx, or a 404 without the hub's error header, as a sandbox proxy
        # gives) means the hub itself did not answer.
        raise HubUnreachable(
            f"could not reach the Hugging Face Hub at {constants.ENDPOINT} for {repo_id} "
            f"(HTTP {exc.code} without the hub's headers) and the local cache has no copy of it; "
            f"{LOCAL_HINT}"
        ) from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
        reason = getattr(exc, "reason", exc)
        waited = time.monotonic() - started
        raise HubUnreachable(
            f"could not reach the Hugging Face Hub at {constants.ENDPOINT} for {repo_id} "
            f"({reason}; {waited:.1f}s) and the local cache has no copy of it; {LOCAL_HINT}"
        ) from None


class HubUnreachable(DataError):
    """The hub did not answer (as opposed to answering that the dataset does not exist)."""


def cached_snapshot(repo_id: str) -> str | None:
    """The newest local snapshot of a hub dataset in the Hugging Face cache (``HF_HOME``,
    ``HF_HUB_CACHE``), as ``hf download --repo-type dataset`` or an earlier download leaves it."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, repo_type="dataset", local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError) or an unusable cache entry
        return None


_NOTICED: set[str] = set()


def hub_snapshot(repo_id: str) -> str | None:
    """None when the hub answers for ``repo_id``; its cached snapshot folder, with a one-line
    notice, when the hub cannot be reached and the dataset is in the local cache."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:  # datasets itself only finds copies it prepared, not snapshots
        return cached_snapshot(repo_id)
    try:
        probe_hub(repo_id)
        return None
    except HubUnreachable:
        snapshot = cached_snapshot(repo_id)
        if snapshot is None:
            raise
        if repo_id not in _NOTICED:  # once per dataset, not once per split
            _NOTICED.add(repo_id)
            log.warning(f"{repo_id}: the Hugging Face Hub cannot be reached; using the "
                        f"local cache ({snapshot})")
        return snapshot


