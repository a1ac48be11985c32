"""The MCP endpoint (`/mcp`) of the real gateway under uvicorn, driven by FastMCP's own client
over streamable HTTP: the tools, the API's keys and tenants, the same answers as the routes,
and every input limit of `remove_background` (the stage server stands in for the balancers;
tests/integration/test_mcp.py runs the tool against the real workers)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from gateway.api.mcp import JSON_SLACK_BYTES, request_cap
from tests.gateway.api.test_slow_clients import SLOW, connect, read_answer
from tests.gateway.api.test_tenants import (
    ADMIN,
    KEY_A,
    KEY_B,
    KEYS,
    PATCH,
    TUS,
    auth,
    finished_job,
    zip_of_images,
)
from tests.support.gateway import Gateway, StageServer
from tests.support.mcp import ImageContent, TextContent, ToolError, mcp_client
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]
TOOLS = {"remove_background", "start_job", "job_status", "list_models"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "0"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}


def client(gw: Gateway, key: str | None = None) -> Any:
    return mcp_client(gw.url, key)


def jpeg_b64(size: tuple[int, int] = (37, 23)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def error_of(exc: pytest.ExceptionInfo[ToolError]) -> str:
    return str(exc.value)


async def test_the_tools_are_listed_with_their_arguments(start_gateway: Start) -> None:
    gw = start_gateway()
    async with client(gw) as c:
        tools = {t.name: t for t in await c.list_tools()}
    assert set(tools) == TOOLS
    props = tools["remove_background"].inputSchema["properties"]
    assert set(props) == {"image_base64", "model", "output"}
    assert tools["remove_background"].inputSchema["required"] == ["image_base64"]
    assert tools["start_job"].inputSchema["required"] == ["upload_id"]


async def test_list_models_is_what_models_says(start_gateway: Start) -> None:
    gw = start_gateway(**KEYS)
    async with client(gw, KEY_A) as c:
        res = await c.call_tool("list_models", {})
    assert res.structured_content == gw.client.get("/models", headers=auth(KEY_A)).json()
    assert res.structured_content["default"] == gw.settings.default_model


async def test_job_status_is_what_status_says_and_only_for_its_tenant(
    start_gateway: Start, stage_server: StageServer,
) -> None:
    gw = start_gateway(stage_server.url, **KEYS)
    job = finished_job(gw, KEY_A, ["a1.jpg", "a2.jpg"])
    async with client(gw, KEY_A) as a:
        res = await a.call_tool("job_status", {"job_id": job})
    assert res.structured_content == gw.client.get(f"/status/{job}", headers=auth(KEY_A)).json()
    assert res.structured_content["state"] == "completed"
    async with client(gw, ADMIN) as admin:
        assert (await admin.call_tool("job_status", {"job_id": job})).structured_content[
            "job_id"] == job
    async with client(gw, KEY_B) as b:
        with pytest.raises(ToolError) as theirs:
            await b.call_tool("job_status", {"job_id": job})
        with pytest.raises(ToolError) as unknown:
            await b.call_tool("job_status", {"job_id": "f" * 32})
    # another tenant's job answers exactly like an unknown one
    assert error_of(theirs) == f"unknown job {job!r}"
    assert error_of(unknown) == f"unknown job {'f' * 32!r}"


def test_no_key_or_a_wrong_one_gets_401_when_keys_are_configured(start_gateway: Start) -> None:
    gw = start_gateway(**KEYS)
    for headers in ({}, auth("wrong-key"), {"Authorization": f"Basic {KEY_A}"}, auth(KEY_A + "x")):
        r = gw.client.post("/mcp", json=INIT, headers={**MCP_HEADERS, **headers})
        assert r.status_code == 401, (headers, r.text)
        assert r.json() == {"detail": "missing or wrong API key: send 'Authorization: Bearer "
                                      "<API_KEY>'"}
        assert r.headers["www-authenticate"] == "Bearer"
        assert gw.client.get("/mcp", headers=headers).status_code == 401
    r = gw.client.post("/mcp", json=INIT, headers={**MCP_HEADERS, **auth(KEY_A)})
    assert r.status_code == 200, r.text


async def test_the_fastmcp_client_without_a_key_is_refused(start_gateway: Start) -> None:
    gw = start_gateway(**KEYS)
    with pytest.raises(httpx.HTTPStatusError) as err:
        async with client(gw) as c:
            await c.list_tools()
    assert err.value.response.status_code == 401


async def test_an_open_gateway_needs_no_key(start_gateway: Start) -> None:
    gw = start_gateway()
    async with client(gw) as c:
        assert (await c.call_tool("list_models", {})).structured_content is not None


async def test_start_job_from_a_finished_tus_upload(
    start_gateway: Start, stage_server: StageServer,
) -> None:
    gw = start_gateway(stage_server.url, **KEYS)
    body = zip_of_images(["t1.jpg", "t2.jpg"])
    r = gw.client.post("/files/", headers={**TUS, **auth(KEY_A), "Upload-Length": str(len(body)),
                                           "Upload-Metadata": "filename dC56aXA="})  # t.zip
    uid = r.headers["Location"].rsplit("/", 1)[-1]
    half = len(body) // 2
    r = gw.client.patch(f"/files/{uid}", content=body[:half],
                        headers={**PATCH, **auth(KEY_A), "Upload-Offset": "0"})
    assert r.status_code == 204
    async with client(gw, KEY_A) as a, client(gw, KEY_B) as b:
        with pytest.raises(ToolError) as unfinished:
            await a.call_tool("start_job", {"upload_id": uid})
        assert error_of(unfinished) == f"upload is not complete (offset {half} of {len(body)})"
        r = gw.client.patch(f"/files/{uid}", content=body[half:],
                            headers={**PATCH, **auth(KEY_A), "Upload-Offset": str(half)})
        assert r.status_code == 204
        with pytest.raises(ToolError) as theirs:
            await b.call_tool("start_job", {"upload_id": uid})
        assert error_of(theirs) == f"unknown or expired upload {uid!r}"
        with pytest.raises(ToolError) as bad_model:
            await a.call_tool("start_job", {"upload_id": uid, "model": "nope"})
        assert error_of(bad_model).startswith("unknown model 'nope'")
        res = await a.call_tool("start_job", {"upload_id": uid, "output": "both"})
        links = res.structured_content
        assert links == {"job_id": uid, "status_url": f"/status/{uid}",
                         "download_url": f"/download/{uid}"}
        wait_for(lambda: gw.client.get(f"/status/{uid}", headers=auth(KEY_A)).json()["state"]
                 == "completed", what="the tus job completes")
        st = (await a.call_tool("job_status", {"job_id": uid})).structured_content
        assert st["state"] == "completed" and st["total"] == 2
        with pytest.raises(ToolError) as used:
            await a.call_tool("start_job", {"upload_id": uid})
        assert uid in error_of(used)


async def test_remove_background_returns_the_cut_out_and_leaves_the_job_listed(
    start_gateway: Start, stage_server: StageServer,
) -> None:
    gw = start_gateway(stage_server.url, **KEYS)
    async with client(gw, KEY_A) as a:
        res = await a.call_tool("remove_background", {"image_base64": jpeg_b64()})
    text, image = res.content
    assert isinstance(text, TextContent) and isinstance(image, ImageContent)
    assert image.mimeType == "image/png"
    with Image.open(io.BytesIO(base64.b64decode(image.data))) as im:
        assert im.format == "PNG" and im.mode == "RGBA"  # the stand-in's 4x3 cut-out
    job = text.text.split()[1].rstrip(":")
    listed = gw.client.get("/jobs", headers=auth(KEY_A)).json()["jobs"]
    assert [(j["job_id"], j["state"], j["total"]) for j in listed] == [(job, "completed", 1)]
    assert gw.client.get("/jobs", headers=auth(KEY_B)).json()["total"] == 0
    [matting] = [c for c in stage_server.calls if c[0] == "matting"]
    assert matting is not None


async def test_remove_background_with_output_both_returns_cut_out_and_matte(
    start_gateway: Start, stage_server: StageServer,
) -> None:
    gw = start_gateway(stage_server.url)
    async with client(gw) as c:
        res = await c.call_tool("remove_background", {"image_base64": jpeg_b64(),
                                                      "output": "both"})
    modes = []
    for block in res.content[1:]:
        assert isinstance(block, ImageContent)
        with Image.open(io.BytesIO(base64.b64decode(block.data))) as im:
            modes.append(im.mode)
    assert modes == ["RGBA", "L"]


async def test_a_data_url_is_taken(start_gateway: Start, stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url)
    async with client(gw) as c:
        res = await c.call_tool("remove_background",
                                {"image_base64": "data:image/jpeg;base64," + jpeg_b64()})
    assert isinstance(res.content[1], ImageContent)


@pytest.mark.parametrize(("args", "settings", "message"), [
    ({"image_base64": "not base64!"}, {}, "image_base64 is not valid base64"),
    ({"image_base64": ""}, {}, "image_base64 is empty"),
    ({"image_base64": base64.b64encode(b"GIF89a not an image").decode()}, {},
     "not a usable image"),
    ({"image_base64": jpeg_b64((40, 30))}, {"max_image_pixels": 1199},
     "not a usable image: image too large: 40x30 pixels (limit 1199)"),
    ({"image_base64": jpeg_b64()}, {"mcp_max_image_bytes": 100},
     "image larger than the limit of 100 bytes (MCP_MAX_IMAGE_BYTES)"),
    ({"image_base64": jpeg_b64(), "model": "nope"}, {}, "unknown model 'nope'"),
    ({"image_base64": jpeg_b64(), "output": "gif"}, {}, "unknown output 'gif'"),
    ({"image_base64": jpeg_b64(), "model": "classical,identity"}, {},
     "remove_background takes one model"),
])
async def test_bad_input_is_a_tool_error_and_costs_nothing(
    start_gateway: Start, stage_server: StageServer, args: dict[str, Any],
    settings: dict[str, Any], message: str,
) -> None:
    gw = start_gateway(stage_server.url, **settings)
    async with client(gw) as c:
        with pytest.raises(ToolError) as err:
            await c.call_tool("remove_background", args)
    assert error_of(err).startswith(message), error_of(err)
    assert gw.client.get("/jobs").json()["total"] == 0
    assert stage_server.calls == []


async def test_the_image_byte_limit_holds_at_its_edge(
    start_gateway: Start, stage_server: StageServer,
) -> None:
    data = base64.b64decode(jpeg_b64())
    gw = start_gateway(stage_server.url, mcp_max_image_bytes=len(data))
    async with client(gw) as c:
        res = await c.call_tool("remove_background",
                                {"image_base64": base64.b64encode(data).decode()})
        assert isinstance(res.content[1], ImageContent)
        with pytest.raises(ToolError, match="MCP_MAX_IMAGE_BYTES"):
            await c.call_tool("remove_background",
                              {"image_base64": base64.b64encode(data + b"\0").decode()})


def test_an_oversized_request_body_is_refused_before_it_is_read_whole(
    start_gateway: Start,
) -> None:
    gw = start_gateway(mcp_max_image_bytes=3000)
    cap = request_cap(3000)
    assert cap == 4000 + JSON_SLACK_BYTES
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "remove_background", "arguments": {"image_base64": ""}}}
    pad = cap - len(json.dumps(call).encode()) + 1
    call["params"]["arguments"]["image_base64"] = "A" * pad  # type: ignore[index]
    body = json.dumps(call).encode()
    assert len(body) == cap + 1
    r = gw.client.post("/mcp", content=body, headers=MCP_HEADERS)
    assert r.status_code == 413, r.text
    assert "MCP_MAX_IMAGE_BYTES=3000" in r.json()["detail"]

    def chunked() -> Any:  # no Content-Length: the cap holds as bytes arrive
        yield body[: cap // 2]
        yield body[cap // 2:]

    r = gw.client.post("/mcp", content=chunked(), headers=MCP_HEADERS)
    assert r.status_code == 413, r.text


async def test_a_job_longer_than_the_wait_keeps_running_and_is_named(
    start_gateway: Start, stage_server: StageServer,
) -> None:
    stage_server.plan["matting"] = ["slow:3"]
    gw = start_gateway(stage_server.url, mcp_wait_s=0.5)
    async with client(gw) as c:
        with pytest.raises(ToolError) as err:
            await c.call_tool("remove_background", {"image_base64": jpeg_b64()})
        message = error_of(err)
        assert "did not finish within 0.5 s (MCP_WAIT_S)" in message
        job = message.split()[1]
        wait_for(lambda: gw.client.get(f"/status/{job}").json()["state"] == "completed",
                 what="the job finishes after the wait")
        assert (await c.call_tool("job_status", {"job_id": job})).structured_content[
            "state"] == "completed"


async def test_a_failed_image_is_a_tool_error_with_its_reason(
    start_gateway: Start, stage_server: StageServer,
) -> None:
    stage_server.plan["matting"] = ["fatal"]
    gw = start_gateway(stage_server.url)
    async with client(gw) as c:
        with pytest.raises(ToolError) as err:
            await c.call_tool("remove_background", {"image_base64": jpeg_b64()})
    assert "ended failed" in error_of(err) and "not an image" in error_of(err), error_of(err)


async def test_the_quota_counts_remove_background_as_a_job(
    start_gateway: Start, stage_server: StageServer,
) -> None:
    gw = start_gateway(stage_server.url, max_jobs_per_hour=1)
    async with client(gw) as c:
        await c.call_tool("remove_background", {"image_base64": jpeg_b64()})
        with pytest.raises(ToolError) as err:
            await c.call_tool("remove_background", {"image_base64": jpeg_b64()})
    assert "per hour" in error_of(err) or "hour" in error_of(err), error_of(err)
    assert gw.client.get("/jobs").json()["total"] == 1


def test_a_stalled_request_body_is_cut_as_an_upload_is(start_gateway: Start) -> None:
    gw = start_gateway(**SLOW)
    with connect(gw) as sock:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Accept: application/json, text/event-stream\r\n"
                     b"Content-Length: 5000\r\n\r\n" + json.dumps(INIT).encode()[:10])
        answer = read_answer(sock)
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "no body bytes" in answer and '"detail"' in answer
