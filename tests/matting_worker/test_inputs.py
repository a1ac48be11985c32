"""The real matting worker (a process) on HEIC, AVIF, a Display P3 JPEG and a 16-bit grey PNG:
accepted, cut out, profile embedded (or converted with COLOR_MANAGEMENT=srgb), 16 bits kept."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.inputs import avif_bytes, disc_rgb, display_p3_icc, heic_bytes, png16_bytes
from tests.support.servers import INTERNAL_HEADERS, ProcessServer

ICC = display_p3_icc()
GREY16 = np.tile(np.linspace(0, 65535, 96), (64, 1)).astype(np.uint16)
"""A ramp over the whole 16-bit range: 96 distinct values, most of them above 255."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    j = d / "input" / "j"
    j.mkdir(parents=True)
    (j / "phone.heic").write_bytes(heic_bytes(disc_rgb(), ICC))
    (j / "web.avif").write_bytes(avif_bytes(disc_rgb()))
    buf = io.BytesIO()
    Image.fromarray(disc_rgb()).save(buf, format="JPEG", quality=95, icc_profile=ICC)
    (j / "p3.jpg").write_bytes(buf.getvalue())
    (j / "scan16.png").write_bytes(png16_bytes(GREY16))
    return d


def _worker(data_dir: Path, worker_id: str, **env: str) -> ProcessServer:
    return ProcessServer("matting_worker", {"DATA_DIR": str(data_dir),
                                            "MATTING_API_URL": "http://127.0.0.1:9",
                                            "DEFAULT_MODEL": "classical", **env},
                         ["--worker-id", worker_id])


@pytest.fixture(scope="module")
def worker(data_dir: Path) -> Iterator[ProcessServer]:
    w = _worker(data_dir, "mw-keep")
    w.start()
    yield w
    w.stop()


def matte(w: ProcessServer, name: str, out: str) -> Path:
    body = {"task_id": 1, "job_id": "j", "input": f"input/j/{name}",
            "output": f"matting_output/j/{out}"}
    r = httpx.post(w.url + "/matting", json=body, timeout=60, headers=INTERNAL_HEADERS)
    assert r.status_code == 200, r.text
    return Path(w.env["DATA_DIR"]) / r.json()["output"]


@pytest.mark.parametrize("name", ["phone.heic", "web.avif"])
def test_heic_and_avif_are_cut_out(worker: ProcessServer, name: str) -> None:
    path = matte(worker, name, name.replace(".", "_") + ".png")
    with Image.open(path) as cut:
        assert (cut.format, cut.mode, cut.size) == ("PNG", "RGBA", (96, 64))
        alpha = np.asarray(cut.getchannel("A"))
    assert alpha.min() < 128 < alpha.max()


@pytest.mark.parametrize("name", ["phone.heic", "p3.jpg"])
def test_the_cutout_carries_the_inputs_profile(worker: ProcessServer, name: str) -> None:
    with Image.open(matte(worker, name, f"icc_{name}.png")) as cut:
        assert cut.info.get("icc_profile") == ICC


def test_a_16_bit_grey_png_gives_a_16_bit_cutout(worker: ProcessServer) -> None:
    path = matte(worker, "scan16.png", "scan16.png")
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert arr.dtype == np.uint16 and arr.shape == (64, 96, 4)
    assert np.array_equal(arr[..., 0], GREY16)  # blue = green = red = the input, unclipped
    assert len(np.unique(arr[0, :, 2])) == 96


def test_srgb_mode_converts_and_embeds_no_profile(data_dir: Path) -> None:
    w = _worker(data_dir, "mw-srgb", COLOR_MANAGEMENT="srgb")
    w.start()
    try:
        path = matte(w, "p3.jpg", "p3_srgb.png")
    finally:
        w.stop()
    with Image.open(path) as cut:
        assert "icc_profile" not in cut.info
        r, _, b = (int(v) for v in cut.convert("RGB").getpixel((48, 32)))  # the disc's centre
    assert r > 180 + 5 and b < 60 - 5  # P3 (180, 90, 60) in sRGB numbers: redder
