"""HEIC/HEIF and AVIF at the gateway: the upload names, the magic bytes, and real uploads
through the real gateway (a stage stand-in does the matting) ingested without a rejection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gateway.errors import BadRequest
from gateway.intake.archive import detect_kind
from gateway.intake.receive import upload_extension
from matting_worker.oneshot import find_images
from tests.support.gateway import Gateway, StageServer
from tests.support.images import make_zip
from tests.support.inputs import avif_bytes, disc_rgb, heic_bytes, png16_bytes
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]


@pytest.mark.parametrize(("name", "ext"), [("IMG_0001.HEIC", "heic"), ("a.heif", "heif"),
                                           ("DSCF0001.HIF", "heif"), ("web.avif", "avif")])
def test_upload_names(name: str, ext: str) -> None:
    assert upload_extension(name) == ext


def test_the_refusal_names_the_new_types() -> None:
    with pytest.raises(BadRequest, match=r"\.heic/\.heif, \.avif"):
        upload_extension("a.rar")


def test_magic_bytes_say_image_for_heic_and_avif_but_not_for_a_video() -> None:
    assert detect_kind("x", heic_bytes(disc_rgb())[:512]) == "image"
    assert detect_kind("x", avif_bytes(disc_rgb())[:512]) == "image"
    # The same `ftyp` box with a video brand is a video (decoded into frames), never an image.
    mp4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 100
    assert detect_kind("clip.heic", mp4) == "video"


def test_mattepipe_matte_finds_them(tmp_path: Path) -> None:
    root = tmp_path
    for name in ("a.HEIC", "b.heif", "c.avif", "d.hif", "e.txt"):
        (root / name).write_bytes(b"x")
    assert [p.name for p in find_images(root)] == ["a.HEIC", "b.heif", "c.avif", "d.hif"]


def _final(gw: Gateway, job_id: str) -> dict[str, object]:
    def done() -> dict[str, object] | None:
        st: dict[str, object] = gw.client.get(f"/status/{job_id}").json()
        return st if st["state"] in ("completed", "completed_with_errors", "failed") else None

    wait_for(done, timeout=60)
    st = done()
    assert st is not None
    return st


def test_a_single_heic_upload_becomes_a_completed_job(start_gateway: Start,
                                                      stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url)
    r = gw.client.post("/upload", params={"filename": "IMG_0001.HEIC"},
                       content=heic_bytes(disc_rgb()), headers={"Content-Type": "image/heic"})
    assert r.status_code == 202, r.text
    st = _final(gw, r.json()["job_id"])
    assert (st["state"], st["total"], st["completed"], st["rejected"]) == ("completed", 1, 1, 0)


def test_an_archive_of_heic_avif_and_16_bit_png_is_taken_whole(start_gateway: Start,
                                                              stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url)
    grey16 = np.tile(np.linspace(0, 65535, 96), (64, 1)).astype(np.uint16)
    members = {"phone/IMG_1.heic": heic_bytes(disc_rgb()), "web/x.avif": avif_bytes(disc_rgb()),
               "scan/deep.png": png16_bytes(grey16)}
    r = gw.client.post("/upload", content=make_zip(members),
                       headers={"Content-Type": "application/zip"})
    assert r.status_code == 202, r.text
    st = _final(gw, r.json()["job_id"])
    assert (st["state"], st["total"], st["completed"], st["rejected"]) == ("completed", 3, 3, 0)
