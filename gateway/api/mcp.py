"""The gateway's tools for agents over MCP (Model Context Protocol): a streamable-HTTP endpoint
at `/mcp`, served by FastMCP, behind the API's keys.

Tools: `remove_background` (one image → its cut-out, through a one-image job:
`gateway.api.mcp_image`), `start_job` (a finished tus upload → a job, as `POST /jobs`),
`job_status` (as `GET /status/{id}`), `list_models` (as `GET /models`). Each calls the very
functions of those routes, so the answers, tenants and refusals are the API's: a tenant's tools
see only its jobs, another tenant's job is an unknown job. A refusal comes back as an MCP tool
error with the API's `detail` text; anything unexpected as a generic tool error (logged by FastMCP,
never shown: it might name paths).

`McpGate` stands in front of FastMCP's app: it answers 401 for a missing or wrong key when
keys are configured (the API's rule), and it reads the request body itself, paced as uploads
are (UPLOAD_IDLE_TIMEOUT_S, MIN_UPLOAD_RATE) and capped at what the largest allowed image
needs (MCP_MAX_IMAGE_BYTES as base64 plus `JSON_SLACK_BYTES`; more answers 413), before FastMCP
sees it. The server is stateless (a fresh transport per request, no session kept between
requests), so clients cost nothing once their request ends.

The endpoint is one Starlette route on the gateway app, not a FastAPI route: it is not in
/openapi.json (MCP describes itself: `tools/list`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import Field
from sqlalchemy.exc import OperationalError
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from gateway.api import jobs as jobs_routes
from gateway.api import uploads as upload_routes
from gateway.api.auth import Caller, caller_for
from gateway.api.mcp_image import WaitExpired, decode_image, one_image_job, wait_cut_out
from gateway.errors import ClientGone, GatewayError, PayloadTooLarge
from gateway.intake.pacing import paced
from gateway.state import GatewayState
from shared.responses import JobLinks, JobStatus, ModelList

with warnings.catch_warnings():
    # authlib (a fastmcp dependency) warns about its own modules on import, through a filter
    # it installs in front of everyone's: import it first, then silence it (the filters come
    # back as they were when the block ends).
    import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401

    warnings.simplefilter("ignore", DeprecationWarning)
    from fastmcp import FastMCP
    from fastmcp.exceptions import ToolError
    from fastmcp.server.dependencies import get_http_request
    from fastmcp.tools.tool import ToolResult
    from fastmcp.utilities.types import Image

__all__ = ["JSON_SLACK_BYTES", "MCP_PATH", "McpGate", "build_server", "mount_mcp"]

log = logging.getLogger("gateway.mcp")

MCP_PATH = "/mcp"
"""Where the endpoint answers (POST for JSON-RPC; GET and DELETE as the transport defines)."""
JSON_SLACK_BYTES = 64 * 1024
"""Room in an MCP request body for the JSON-RPC envelope and the other arguments, beside the
base64 of the largest image."""
UNAUTHORIZED = "missing or wrong API key: send 'Authorization: Bearer <API_KEY>'"
"""The API's own 401 text (`gateway.api.auth`)."""

INSTRUCTIONS = """Background removal (mattepipe). remove_background: one image (base64) in,
its cut-out PNG out. For many images: upload an archive with tus (POST /files), then
start_job(upload_id) and follow it with job_status(job_id); download the zip at download_url
with the same bearer key. list_models: the engines `model` may name."""


def request_cap(max_image_bytes: int) -> int:
    """The largest MCP request body: the base64 of the largest image plus the envelope."""
    return 4 * ((max_image_bytes + 2) // 3) + JSON_SLACK_BYTES


@contextlib.contextmanager
def tool_errors() -> Iterator[None]:
    """The API's refusals as tool errors carrying their `detail` (what a client would read
    in the HTTP answer); a full task database as the API says it."""
    try:
        yield
    except GatewayError as exc:
        raise ToolError(exc.detail) from None
    except HTTPException as exc:
        raise ToolError(str(exc.detail)) from None
    except OperationalError as exc:
        if "full" not in str(exc.orig).lower():
            raise
        raise ToolError("not enough disk space for the task database; free space in "
                        "DATA_DIR and retry") from None


def build_server(app: FastAPI) -> FastMCP[Any]:
    """The MCP server of the gateway `app` (its `state.gw` exists once the app has started)."""
    mcp: FastMCP[Any] = FastMCP("mattepipe", instructions=INSTRUCTIONS, mask_error_details=True)

    def gw() -> GatewayState:
        state: GatewayState = app.state.gw
        return state

    def caller() -> Caller:
        """Who is asking: the key of this very request (`McpGate` refused wrong ones)."""
        header = get_http_request().headers.get("authorization", "")
        scheme, key = get_authorization_scheme_param(header)
        found = caller_for(gw().settings, key if scheme.lower() == "bearer" else None)
        if found is None:  # unreachable behind McpGate; never serve a request without a key
            raise ToolError(UNAUTHORIZED)
        return found

    @mcp.tool
    async def remove_background(
        image_base64: Annotated[str, Field(
            description="the image file (JPEG, PNG, WebP, BMP or TIFF), base64; a data URL "
                        "is taken too")],
        model: Annotated[str | None, Field(
            description="the engine (list_models); default: the server's")] = None,
        output: Annotated[str, Field(
            description="rgba: the cut-out; alpha: the matte alone; both: cut-out then "
                        "matte")] = "rgba",
    ) -> ToolResult:
        """Remove the background of one image: the cut-out as a PNG with alpha, the size of
        the input. Runs as a one-image job through the same workers as any job (it stays
        listed; its id is in the answer); waits for it, at most MCP_WAIT_S seconds."""
        state, who = gw(), caller()
        with tool_errors():
            data, name, w, h = decode_image(image_base64, state.settings.mcp_max_image_bytes,
                                            state.settings.max_image_pixels)
            job_id = await one_image_job(state, who, data, name, model, output)
            try:
                cut = await wait_cut_out(state, job_id, w, h)
            except WaitExpired:
                raise ToolError(
                    f"job {job_id} did not finish within {state.settings.mcp_wait_s:g} s "
                    f"(MCP_WAIT_S); it keeps running: follow it with job_status") from None
        log.info("mcp remove_background: job %s (%dx%d) for %s", job_id, w, h, who.label)
        note = f"job {job_id}: {w}x{h}, {len(cut.pngs)} PNG ({output})"
        return ToolResult(content=[note, *(Image(data=png, format="png") for png in cut.pngs)])

    @mcp.tool
    async def start_job(
        upload_id: Annotated[str, Field(
            description="a finished tus upload: the last path segment of its Location")],
        model: Annotated[str | None, Field(
            description="engine name(s), comma-separated (list_models)")] = None,
        output: Annotated[str, Field(description="rgba, alpha or both")] = "rgba",
    ) -> JobLinks:
        """Start a job on a finished resumable upload (as POST /jobs): its id and the status
        and download paths (on this gateway, with the same bearer key)."""
        state, who = gw(), caller()
        body = upload_routes.JobFromUpload(upload_id=upload_id, model=model, output=output)
        with tool_errors():
            return await upload_routes.create_job_from_upload(body, state, who)

    @mcp.tool
    async def job_status(
        job_id: Annotated[str, Field(description="a job's id (start_job, remove_background)")],
    ) -> JobStatus:
        """A job's progress, as GET /status/{job_id}: counts per task state, progress,
        throughput, ETA, per-stage timings."""
        state, who = gw(), caller()
        with tool_errors():
            return await jobs_routes.job_status(job_id, state, who)

    @mcp.tool
    async def list_models() -> ModelList:
        """The engines `model` may name, and the default (as GET /models)."""
        return await jobs_routes.models(gw().settings)

    return mcp


class McpGate:
    """FastMCP's ASGI app behind the API's key check and a paced, capped body (see module)."""

    def __init__(self, app: FastAPI, inner: Callable[[Scope, Receive, Send], Any]) -> None:
        self.app = app
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        gw: GatewayState = self.app.state.gw
        headers = Headers(scope=scope)
        scheme, key = get_authorization_scheme_param(headers.get("authorization"))
        if caller_for(gw.settings, key if scheme.lower() == "bearer" else None) is None:
            await _answer(send, 401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
            return
        if scope["method"] != "POST":
            await self.inner(scope, receive, send)
            return
        try:
            body = await _read_body(receive, headers, gw)
        except GatewayError as exc:
            await _answer(send, exc.status_code, exc.detail, exc.headers)
            return
        await self.inner(scope, _replay(body, receive), send)


async def _read_body(receive: Receive, headers: Headers, gw: GatewayState) -> bytes:
    """The whole body, or `PayloadTooLarge` past the cap (by Content-Length before a byte is
    read, else as bytes arrive), `UploadStalled` for a trickle, `ClientGone` for a hang-up."""
    cap = request_cap(gw.settings.mcp_max_image_bytes)
    too_large = PayloadTooLarge(
        f"MCP request larger than {cap} bytes (an image of MCP_MAX_IMAGE_BYTES="
        f"{gw.settings.mcp_max_image_bytes} as base64, and its arguments)")
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise too_large

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    body = bytearray()
    async for chunk in paced(chunks(), gw.settings):
        body += chunk
        if len(body) > cap:
            raise too_large
    return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the body already read, then the client's own messages
    (the transport watches them for a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    """`{"detail": ...}` as every refusal of the API is answered."""
    payload = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def mount_mcp(app: FastAPI) -> Callable[[], AbstractAsyncContextManager[None]]:
    """Add `/mcp` to `app`; returns what its lifespan must run around its `yield` (FastMCP's
    session manager, started once the gateway's state is open)."""
    mcp_app = build_server(app).http_app(path=MCP_PATH, stateless_http=True)
    app.router.routes.append(Route(MCP_PATH, McpGate(app, mcp_app)))

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        async with mcp_app.router.lifespan_context(mcp_app):
            yield

    return running
