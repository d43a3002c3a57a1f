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

    from kerastrain.storage.remote import list_remote_checkpoints

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


@pytest.mark.slow
def test_secrets_stay_out_of_output_and_files(azure, tmp_path):
    secret = "sv=2099-01-01&sig=TOPSECRETSIGNATURE123"
    out = tmp_path / "out"
    proc = kerastrain("run", "--output-dir", str(out), *TINY, "--max-steps", "2",
                      "--save-every", "1", "--cloud-provider", "azure", "--cloud-bucket",
                      azure.make_bucket(), "--azure-sas-token", secret,
                      "--azure-account-name", "devstoreaccount1")
    seen = proc.stdout + proc.stderr
    for path in out.rglob("*"):
        if path.is_file():
            seen += path.read_bytes().decode("latin-1")
    assert "TOPSECRETSIGNATURE123" not in seen
    assert json.loads((out / "run_config.json").read_text())["cloud"]["azure_sas_token"] == \
        "<redacted>"


@pytest.mark.slow
def test_sharded_lora_checkpoints_upload_resume_from_the_url_and_load_on_one_device(s3, tmp_path):
    """A run on a 2-device mesh writes Orbax sharded checkpoints: they upload whole, resume from
    the URL exactly (LoRA adapters included), and load on one device with adapters merged."""
    from tests.training.test_distribution import SMALL, assert_close, forced_devices, train_losses

    bucket = s3.make_bucket()
    run = [*SMALL, "--max-steps", "4", "--save-every", "2", "--batch-size", "2", "--fsdp", "2",
           "--use-lora", "--lora-rank", "4"]
    first = tmp_path / "first"
    proc = kerastrain("run", *run, "--output-dir", str(first), "--cloud-provider", "s3",
                      "--cloud-bucket", bucket, "--cloud-prefix", "mesh", env=forced_devices(2))
    assert proc.returncode == 0, proc.stderr
    assert (first / "final_checkpoint" / "state" / "model").is_dir()

    from kerastrain.storage.remote import list_remote_checkpoints

    root = f"s3://{bucket}/mesh"
    assert {"checkpoint_step_2", "final_checkpoint"} <= {
        c.name for c in list_remote_checkpoints(root)}
    second = tmp_path / "second"
    resumed = kerastrain("run", *run, "--output-dir", str(second), "--resume-from",
                         f"{root}/checkpoint_step_2", env=forced_devices(2))
    assert resumed.returncode == 0, resumed.stderr
    assert_close(train_losses(second), train_losses(first)[2:], "resumed from the URL")

    evals = [r for r in map(json.loads, (first / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "eval"]
    scored = kerastrain("eval", str(first), "--json", env=forced_devices(1))
    assert scored.returncode == 0, scored.stderr
    loss = json.loads(scored.stdout.strip().splitlines()[-1])["loss"]
    assert loss == pytest.approx(evals[-1]["val_loss"], rel=1e-4)
