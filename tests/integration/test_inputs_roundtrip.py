"""A zip of an iPhone HEIC, an AVIF and a 16-bit scan through the real stack: every one is
cut out, the HEIC's profile is in its cut-out and the scan's cut-out is still 16-bit."""

from __future__ import annotations

import io
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.support.images import make_zip
from tests.support.inputs import avif_bytes, disc_rgb, display_p3_icc, heic_bytes, png16_bytes
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_heic_avif_and_16_bit_png_come_back_cut_out(stack: Stack) -> None:
    icc = display_p3_icc()
    grey16 = np.tile(np.linspace(0, 65535, 96), (64, 1)).astype(np.uint16)
    members = {"iphone/IMG_0001.HEIC": heic_bytes(disc_rgb(), icc),
               "web/banner.avif": avif_bytes(disc_rgb()),
               "scans/plate.png": png16_bytes(grey16)}
    with stack.client() as c:
        r = c.post("/upload", content=make_zip(members),
                   headers={"Content-Type": "application/zip"})
        assert r.status_code == 202, r.text
        job = r.json()
        st = stack.wait_final(job["job_id"])
        assert (st["state"], st["total"], st["completed"]) == ("completed", 3, 3), st
        r = c.get(job["download_url"])
        assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    for stem in ("iphone/IMG_0001", "web/banner", "scans/plate"):
        with Image.open(io.BytesIO(zf.read(f"matting_output/{stem}.png"))) as cut:
            assert (cut.mode, cut.size) == ("RGBA", (96, 64))
            if stem.startswith("iphone"):
                assert cut.info.get("icc_profile") == icc
    plate = cv2.imdecode(np.frombuffer(zf.read("matting_output/scans/plate.png"), np.uint8),
                         cv2.IMREAD_UNCHANGED)
    assert plate.dtype == np.uint16 and np.array_equal(plate[..., 1], grey16)
