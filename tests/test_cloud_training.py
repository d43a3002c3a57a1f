"""Training runs that upload checkpoints to local S3/GCS/Azure servers and resume from them."""

import json

import pytest

from tests.helpers import TINY, kerastrain

PROVIDERS = {"s3": "s3", "gcs": "gs", "azure": "az"}


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["s3", "gcs", "azure"])
def test_run_uploads_checkpoints_and_a_second_run_resumes_from_the_url(provider, request,
                                                                       tmp_path):
    server = request.getfixturevalue(provider)  # starts the server, sets the client's env
    bucket = server.make_bucket()
    first = tmp_path / "first"
    proc = kerastrain("run", "--output-dir", str(first), *TINY, "--max-steps", "6",
                      "--save-every", "3", "--log-every", "3", "--cloud-provider", provider,
                      "--cloud-bucket", bucket, "--cloud-prefix", "runs/exp1")
    assert proc.returncode == 0, proc.stderr

    from kerastrain.uploads import list_remote_checkpoints

    root = f"{PROVIDERS[provider]}://{bucket}/runs/exp1"
    names = sorted(c.name for c in list_remote_checkpoints(root))
    assert {"checkpoint_step_3", "final_checkpoint"} <= set(names), names

    second = tmp_path / "second"
    url = f"{root}/checkpoint_step_3"
    resumed = kerastrain("run", "--output-dir", str(second), *TINY, "--max-steps", "6",
                         "--log-every", "1", "--resume-from", url)
    assert resumed.returncode == 0, resumed.stderr
    steps = [json.loads(line)["step"] for line in
             (second / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [4, 5, 6]
    assert (second / "final_checkpoint" / "manifest.json").exists()
