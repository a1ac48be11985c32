"""Which ingest gets a child process (`GatewayState._ingests_in_child`): by the upload's bytes
(INGEST_CHILD_MIN_BYTES) and, for a zip, its member count (INGEST_CHILD_MIN_MEMBERS), read
from the zip's end record with `zip_members`. Real zips, a real gateway, its real child."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.state import zip_members
from tests.support.gateway import Gateway, StageServer
from tests.support.images import make_zip, noise_set, zip_of_images
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_zip_members_counts_the_end_record(tmp_path: Path) -> None:
    names = [f"d/{i:04d}.jpg" for i in range(37)]
    assert zip_members(_write(tmp_path / "a.zip", zip_of_images(names))) == 37
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()
    assert zip_members(_write(tmp_path / "empty.zip", empty.getvalue())) == 0


def test_zip_members_finds_the_record_behind_a_long_comment(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.png", b"x" * 10)
        zf.writestr("b.png", b"y" * 10)
        zf.comment = b"PK\x05\x06 looks like a record but is text" + b"c" * 65000
    # the comment's signature comes after the real record: its "comment length" does not
    # reach the file's end, so the real record's count is read
    assert zip_members(_write(tmp_path / "c.zip", buf.getvalue())) == 2


def test_zip_members_is_none_for_what_is_no_zip(tmp_path: Path) -> None:
    assert zip_members(None) is None  # an upload on S3: no local file
    assert zip_members(tmp_path / "missing.zip") is None
    assert zip_members(_write(tmp_path / "noise.bin", os.urandom(4096))) is None
    assert zip_members(_write(tmp_path / "empty.bin", b"")) is None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("a.jpg")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    assert zip_members(_write(tmp_path / "a.tar", buf.getvalue())) is None
    whole = zip_of_images(["a.jpg", "b.jpg"])
    assert zip_members(_write(tmp_path / "cut.zip", whole[:-10])) is None  # record cut short


def _run(gw: Gateway, body: bytes, n: int) -> None:
    r = gw.client.post("/upload", content=body, headers={"Content-Type": "application/zip"})
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    wait_for(lambda: gw.client.get(f"/status/{job}").json()["state"] == "completed", 120)
    assert gw.client.get(f"/status/{job}").json()["completed"] == n


@pytest.fixture(scope="module")
def big_few() -> bytes:
    """A zip past INGEST_CHILD_MIN_BYTES (1 MiB) with few members: 12 noise PNGs of 256 px."""
    body = make_zip(noise_set(12, 256))
    assert len(body) > 1024**2
    return body


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_a_big_zip_of_few_images_stays_in_the_gateway(
    start_gateway: Start, stage_server: StageServer, data_dir: Path, big_few: bytes,
) -> None:
    gw = start_gateway(stage_server.url)  # 12 members < INGEST_CHILD_MIN_MEMBERS (256)
    _run(gw, big_few, 12)
    assert not (data_dir / "logs" / "gateway-ingest.log").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_enough_members_send_the_same_zip_to_a_child(
    start_gateway: Start, stage_server: StageServer, data_dir: Path, big_few: bytes,
) -> None:
    gw = start_gateway(stage_server.url, ingest_child_min_members=12)
    _run(gw, big_few, 12)
    assert "job " in (data_dir / "logs" / "gateway-ingest.log").read_text()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_min_members_zero_lets_size_alone_decide(
    start_gateway: Start, stage_server: StageServer, data_dir: Path, big_few: bytes,
) -> None:
    gw = start_gateway(stage_server.url, ingest_child_min_members=0)
    _run(gw, big_few, 12)
    assert (data_dir / "logs" / "gateway-ingest.log").exists()
