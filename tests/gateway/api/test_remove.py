"""rembg's HTTP API (`/api/remove`) on the real gateway under uvicorn, the stage server standing
in for the matting API: what each rembg parameter becomes in the matting request, every
refusal, the sync lane header, scratch files, keys and quotas, and the `?url=` form with its
address rule (tests/integration/test_remove.py runs it against the real stack)."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response
from PIL import Image

from gateway.api.remove import MULTIPART_SLACK_BYTES
from gateway.intake.url_fetch import check_fetch_url
from tests.gateway.api.test_tenants import KEY_A, KEYS, auth, upload
from tests.support.gateway import Gateway, StageServer
from tests.support.servers import ThreadServer

Start = Callable[..., Gateway]


def jpeg(size: tuple[int, int] = (37, 23)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buf, "JPEG")
    return buf.getvalue()


def post(gw: Gateway, params: dict[str, str] | None = None, data: dict[str, str] | None = None,
         body: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    files = {"file": ("photo.jpg", jpeg() if body is None else body, "image/jpeg")}
    return gw.client.post("/api/remove", params=params, data=data, files=files,
                          headers=headers)


def last_params(st: StageServer) -> dict[str, Any]:
    params: dict[str, Any] = st.requests[-1]["params"]
    return params


def no_scratch(data_dir: Path) -> bool:
    return not list(data_dir.glob("input/sync-*")) and not list(
        data_dir.glob("matting_output/sync-*"))


def test_post_answers_the_cut_out_through_the_sync_lane(
    start_gateway: Start, stage_server: StageServer, data_dir: Path
) -> None:
    gw = start_gateway(stage_server.url)
    r = post(gw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).mode == "RGBA"
    req = stage_server.requests[-1]
    assert stage_server.lanes == ["sync"]
    assert req["job_id"].startswith("sync-") and req["input"].startswith(f"input/{req['job_id']}/")
    assert req["output"] == f"matting_output/{req['job_id']}/image.png"
    assert req["params"] == {"models": ["classical"], "output": "rgba"}
    assert no_scratch(data_dir)  # the scratch folders went with the answer
    assert gw.client.get("/jobs").json()["jobs"] == []  # nothing queued in the task database


def test_each_rembg_parameter_maps_or_is_refused(
    start_gateway: Start, stage_server: StageServer
) -> None:
    gw = start_gateway(stage_server.url)
    ok: list[tuple[dict[str, str], dict[str, str], dict[str, Any]]] = [
        ({}, {"model": "identity"}, {"models": ["identity"]}),
        ({}, {"om": "true"}, {"output": "alpha"}),
        ({"bgc": "255,0,16,255"}, {}, {"background": "#ff0010"}),
        ({"bgc": "1,2,3"}, {}, {"background": "#010203"}),
        ({"bgc": "9,9,9,0"}, {}, {"output": "rgba"}),  # transparent: no background
        ({"extras": "{}"}, {}, {"output": "rgba"}),
        ({}, {"a": "false", "af": "0", "ab": "255", "ae": "40", "ppm": "0", "dc": "off",
              "vm": "no"}, {"output": "rgba"}),
        ({"model": "identity"}, {}, {"models": ["identity"]}),  # query works for POST too
    ]
    for query, form, expect in ok:
        r = post(gw, query, form)
        assert r.status_code == 200, (query, form, r.text)
        got = last_params(stage_server)
        assert {k: got.get(k) for k in expect} == expect, (query, form, got)
        assert "background" not in expect or got.get("format") in (None, "png")
    refused: list[tuple[dict[str, str], dict[str, str], str]] = [
        ({}, {"model": "u2net_nowhere"}, "unknown model"),
        ({}, {"a": "true"}, "a=true (alpha matting) is not supported"),
        ({}, {"ppm": "1"}, "ppm=true"),
        ({}, {"dc": "yes"}, "dc=true"),
        ({}, {"vm": "on"}, "vm=true"),
        ({}, {"a": "maybe"}, "a must be a boolean"),
        ({}, {"af": "256"}, "af must be between 0 and 255"),
        ({}, {"ab": "-1"}, "ab must be between 0 and 255"),
        ({}, {"ae": "-3"}, "ae must be at least 0"),
        ({}, {"ae": "x"}, "ae must be a whole number"),
        ({"bgc": "red"}, {}, "bgc must be 'r,g,b,a'"),
        ({"bgc": "1,2,3,4,5"}, {}, "bgc must be"),
        ({"bgc": "300,0,0,255"}, {}, "bgc values must be 0-255"),
        ({"bgc": "0,0,0,128"}, {}, "bgc alpha must be 255"),
        ({"bgc": "0,0,0,255"}, {"om": "true"}, "bgc has no meaning with om"),
        ({"extras": "{\"sam_prompt\": 1}"}, {}, "extras ['sam_prompt'] are not supported"),
        ({"extras": "not json"}, {}, "extras must be a JSON object"),
        ({"extras": "[1]"}, {}, "extras must be a JSON object"),
    ]
    calls = len(stage_server.calls)
    for query, form, why in refused:
        r = post(gw, query, form)
        assert r.status_code == 422, (query, form, r.text)
        assert why in r.json()["detail"], (why, r.json())
    assert len(stage_server.calls) == calls  # a refusal costs no stage call


def test_bad_requests_are_refused_before_any_work(
    start_gateway: Start, stage_server: StageServer, data_dir: Path
) -> None:
    gw = start_gateway(stage_server.url, remove_max_image_bytes=2000)
    no_file = gw.client.post("/api/remove", data={"model": "classical"},
                             files={"other": ("x.txt", b"x", "text/plain")})
    assert no_file.status_code == 422 and "field 'file' is required" in no_file.json()["detail"]
    raw = gw.client.post("/api/remove", content=jpeg(), headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 422 and "multipart/form-data" in raw.json()["detail"]
    not_image = post(gw, body=b"this is not an image at all")
    assert not_image.status_code == 400 and "not a usable image" in not_image.json()["detail"]
    empty = post(gw, body=b"")
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    big = jpeg((300, 300))
    assert 2000 < len(big) < 2000 + MULTIPART_SLACK_BYTES
    too_big = post(gw, body=big)  # within the body cap: the image itself is measured
    assert too_big.status_code == 413 and "REMOVE_MAX_IMAGE_BYTES" in too_big.json()["detail"]
    huge = post(gw, body=b"\xff" * (2000 + MULTIPART_SLACK_BYTES + 10))  # refused by length
    assert huge.status_code == 413

    def chunks() -> Any:  # no Content-Length: cut as the bytes arrive
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"
        for _ in range(20):
            yield b"\0" * 8192

    chunked = gw.client.post("/api/remove", content=chunks(),
                             headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert chunked.status_code == 413
    assert stage_server.calls == [] and no_scratch(data_dir)


def test_stage_answers_become_the_callers(start_gateway: Start,
                                          stage_server: StageServer, data_dir: Path) -> None:
    gw = start_gateway(stage_server.url)
    stage_server.plan["matting"] = ["busy", "fatal", "retryable"]
    busy = post(gw)
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
    assert "no matting worker free" in busy.json()["detail"]
    fatal = post(gw)
    assert fatal.status_code == 400 and "could not be processed" in fatal.json()["detail"]
    failed = post(gw)
    assert failed.status_code == 502
    assert no_scratch(data_dir)
    down = start_gateway("http://127.0.0.1:9")  # nothing listens: 503, never a hang
    r = post(down)
    assert r.status_code == 503 and "Retry-After" in r.headers


def test_keys_and_quotas_apply(start_gateway: Start, stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url, max_jobs_per_hour=1, **KEYS)
    assert post(gw).status_code == 401
    assert post(gw, headers=auth("wrong")).status_code == 401
    assert post(gw, headers=auth(KEY_A)).status_code == 200
    assert upload(gw, KEY_A, ["a.jpg"]).status_code == 202  # the key's one job this hour
    r = post(gw, headers=auth(KEY_A))
    assert r.status_code == 429 and "Retry-After" in r.headers


def test_curl_as_rembg_documents_it(start_gateway: Start, stage_server: StageServer,
                                    tmp_path: Path) -> None:
    """rembg's README: `curl -s -F file=@photo.jpg "http://host/api/remove" -o out.png`."""
    gw = start_gateway(stage_server.url)
    photo, out = tmp_path / "photo.jpg", tmp_path / "out.png"
    photo.write_bytes(jpeg())
    subprocess.run(["curl", "-sf", "-F", f"file=@{photo}", f"{gw.url}/api/remove?bgc=0,0,0,0",
                    "-o", str(out)], check=True, timeout=60)
    assert Image.open(out).format == "PNG"


# --- GET /api/remove?url= --------------------------------------------------------------------

@pytest.fixture
def image_host() -> Any:
    app = FastAPI()

    @app.get("/photo.jpg")
    async def photo() -> Response:
        return Response(jpeg(), media_type="image/jpeg")

    @app.get("/big")
    async def big() -> Response:
        return Response(b"\xff" * 5000, media_type="image/jpeg")

    @app.get("/hop")
    async def hop() -> RedirectResponse:
        return RedirectResponse("/photo.jpg")

    @app.get("/loop")
    async def loop() -> RedirectResponse:
        return RedirectResponse("/loop")

    with ThreadServer(app) as srv:
        yield srv


def test_url_form_is_off_by_default(start_gateway: Start, stage_server: StageServer,
                                    image_host: ThreadServer) -> None:
    gw = start_gateway(stage_server.url)
    r = gw.client.get("/api/remove", params={"url": image_host.url + "/photo.jpg"})
    assert r.status_code == 403 and "REMOVE_URL_FETCH" in r.json()["detail"]


def test_url_form_refuses_private_addresses(start_gateway: Start, stage_server: StageServer,
                                            image_host: ThreadServer) -> None:
    gw = start_gateway(stage_server.url, remove_url_fetch=True)
    port = image_host.url.rsplit(":", 1)[1]
    for url in (image_host.url + "/photo.jpg", f"http://localhost:{port}/photo.jpg",
                "http://10.1.2.3/x.jpg", "http://169.254.169.254/latest/meta-data",
                "http://[::ffff:127.0.0.1]/x.jpg", "http://user:pw@example.com/x.jpg",
                "ftp://example.com/x.jpg", "file:///etc/passwd"):
        r = gw.client.get("/api/remove", params={"url": url})
        assert r.status_code == 400, (url, r.text)
    assert stage_server.calls == []
    assert check_fetch_url("http://192.168.0.1/") is not None
    assert check_fetch_url("http://192.168.0.1/", allow_private=True) is None


def test_url_form_fetches_with_limits(start_gateway: Start, stage_server: StageServer,
                                      image_host: ThreadServer) -> None:
    gw = start_gateway(stage_server.url, remove_url_fetch=True, remove_url_allow_private=True,
                       remove_max_image_bytes=4000)
    r = gw.client.get("/api/remove", params={"url": image_host.url + "/photo.jpg", "om": "1"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert last_params(stage_server)["output"] == "alpha" and stage_server.lanes == ["sync"]
    hop = gw.client.get("/api/remove", params={"url": image_host.url + "/hop"})
    assert hop.status_code == 200
    loop = gw.client.get("/api/remove", params={"url": image_host.url + "/loop"})
    assert loop.status_code == 400 and "redirects" in loop.json()["detail"]
    big = gw.client.get("/api/remove", params={"url": image_host.url + "/big"})
    assert big.status_code == 413
    missing = gw.client.get("/api/remove", params={"url": image_host.url + "/nothing"})
    assert missing.status_code == 400 and "404" in missing.json()["detail"]
    bad = gw.client.get("/api/remove", params={"url": image_host.url + "/photo.jpg", "a": "1"})
    assert bad.status_code == 422
    assert len(stage_server.calls) == 2
