"""Data files in the local S3, GCS and Azure servers: reading, bad locations, and a resume that
reads nothing before its shard (counted in the S3 server's own request log)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re

import pytest

from kerastrain.data.pipeline import StreamingTextPipeline
from kerastrain.data.sources import SourceRequest
from kerastrain.data.tokenizer import ByteTokenizer
from kerastrain.errors import DataError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("s3fs")

from kerastrain_hf import HFSource  # noqa: E402

SHARDS = 4
ROWS = 300  # rows per shard, in row groups of 100
DOCS = [[f"shard {s} document {r}: " + "word " * (r % 7) for r in range(ROWS)]
        for s in range(SHARDS)]


def _parquet(docs: list[str]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": docs, "n": list(range(len(docs)))}), buffer,
                   row_group_size=100)
    return buffer.getvalue()


def _jsonl(docs: list[str]) -> bytes:
    return "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()


def _put(server, bucket: str, key: str, data: bytes) -> None:
    """Upload with the server's own client (boto3, google-cloud-storage, azure-storage-blob)."""
    if server.scheme == "s3":
        server.client().put_object(Bucket=bucket, Key=key, Body=data)
    elif server.scheme == "gs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(project="test-project", credentials=AnonymousCredentials())
        client.bucket(bucket).blob(key).upload_from_string(data)
    else:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(server.connection_string)
        service.get_container_client(bucket).upload_blob(key, data)


def _open(location: str):
    return HFSource().open(SourceRequest(location))


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_a_glob_of_shards_in_a_bucket_reads_like_local_files(kind, request):
    server = request.getfixturevalue(kind)
    bucket = server.make_bucket()
    for s in range(2):
        _put(server, bucket, f"corpus/part-{s}.jsonl", _jsonl(DOCS[s]))
    _put(server, bucket, "corpus/readme.md", b"not data")
    docs = _open(f"{server.scheme}://{bucket}/corpus/*.jsonl")
    assert list(docs.iter_from(0)) == DOCS[0] + DOCS[1]
    prefix = _open(f"{server.scheme}://{bucket}/corpus")  # a prefix: its data files
    assert list(prefix.iter_from(ROWS + 3)) == DOCS[1][3:]


def test_missing_bucket_empty_key_and_missing_credentials_are_one_line_errors(s3, monkeypatch):
    bucket = s3.make_bucket()
    with pytest.raises(DataError, match="does not exist") as missing:
        _open("s3://no-such-bucket-kt/data/*.parquet")
    with pytest.raises(DataError, match="no data files") as empty:
        _open(f"s3://{bucket}/nothing-here/")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(DataError, match="credentials") as no_credentials:
        _open(f"s3://{bucket}/data/*.parquet")
    for error in (missing, empty, no_credentials):
        assert "\n" not in str(error.value)


def _pipeline(docs):
    return StreamingTextPipeline(docs, ByteTokenizer(), seq_len=16, batch_size=2,
                                 shuffle_buffer_size=8, seed=3, epochs=1)


def _digest(batch) -> str:
    return hashlib.sha1(batch.inputs.tobytes() + batch.labels.tobytes()).hexdigest()


def test_resume_of_a_multi_shard_bucket_stream_is_exact_and_reads_no_earlier_shard(s3, caplog):
    bucket = s3.make_bucket()
    for s in range(SHARDS):
        _put(s3, bucket, f"web/shard-{s:03d}.parquet", _parquet(DOCS[s]))
    location = f"s3://{bucket}/web/*.parquet"
    full = list(_pipeline(_open(location)))
    # A batch whose saved position (where its shuffle window and chunk of 64 documents began)
    # lies in the third shard's second row group.
    k = next(i for i, b in enumerate(full) if (b.state.source_position or [-1]) >= [2, 101])
    state = full[k].state
    assert state.source_position[0] == 2
    with caplog.at_level(logging.INFO, logger="werkzeug"):  # moto's server logs each request
        # Opening checks that the stream has a document: the first row group of the first
        # shard, a cost that does not depend on the position. The resume itself comes after.
        docs = _open(location)
        caplog.clear()
        resumed = _pipeline(docs)
        resumed.restore(state)
        rest = list(resumed)
    assert [_digest(b) for b in rest] == [_digest(b) for b in full[k + 1:]]
    requests = [re.sub(r"\x1b\[[0-9;]*m", "", r.getMessage()) for r in caplog.records
                if f"/{bucket}/" in r.getMessage()]  # without the terminal colours
    gets = [line for line in requests if '"GET' in line and ".parquet" in line]
    assert gets, requests  # the log is seen at all
    for shard in range(2):  # the shards before the resume point: not one request
        assert not [line for line in requests if f"shard-{shard:03d}" in line]
    assert any("shard-002" in line for line in gets)
    print(f"requests for data files at the resume: {len(gets)}: "
          f"{sorted({line.split('/web/')[1].split()[0] for line in gets})}")


def test_run_with_a_missing_bucket_exits_2_with_one_line_before_training(s3, tmp_path):
    from tests.helpers import TINY, invoke

    out = tmp_path / "out"
    result = invoke("run", *TINY, "--output-dir", str(out), "--dataset-id",
                    "s3://no-such-bucket-kt/web/*.parquet")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if "no-such-bucket-kt" in line]
    assert len(lines) == 1 and "does not exist" in lines[0], result.output
    assert not (out / "metrics.jsonl").exists()


def test_data_options_alone_reach_a_bucket_and_its_credentials_are_never_written(
        s3, tmp_path, monkeypatch):
    """Endpoint, region and keys as --data-option settings, none in the environment: the run
    reads the bucket, and run_config.json holds no credential; a re-run from run_config.json
    without them is a one-line error, not an anonymous read."""
    from tests.helpers import TINY, invoke

    bucket = s3.make_bucket()
    for s in range(2):
        _put(s3, bucket, f"web/shard-{s:03d}.parquet", _parquet(DOCS[s]))
    env = s3.env()
    for name in env:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    options = ["--data-option", f"endpoint_url={s3.url}",
               "--data-option", "client_kwargs.region_name=us-east-1",
               "--data-option", f"key={env['AWS_ACCESS_KEY_ID']}",
               "--data-option", f"secret={env['AWS_SECRET_ACCESS_KEY']}"]
    out = tmp_path / "out"
    result = invoke("run", *TINY, "--output-dir", str(out), "--max-steps", "2",
                    "--dataset-id", f"s3://{bucket}/web/*.parquet", *options)
    assert result.exit_code == 0, result.output
    saved = (out / "run_config.json").read_text()
    assert env["AWS_SECRET_ACCESS_KEY"] not in saved and env["AWS_ACCESS_KEY_ID"] not in saved
    assert json.loads(saved)["data"]["data_options"] == {
        "endpoint_url": s3.url, "client_kwargs.region_name": "us-east-1",
        "key": "<redacted>", "secret": "<redacted>"}
    again = invoke("run", "--config", str(out / "run_config.json"), "--output-dir",
                   str(tmp_path / "again"))
    assert again.exit_code == 2, again.output
    lines = [x for x in again.output.splitlines() if x.startswith("Error:")]
    assert len(lines) == 1 and "no AWS credentials found" in lines[0], again.output
