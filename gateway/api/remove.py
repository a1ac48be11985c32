"""rembg's HTTP API on the gateway: `POST /api/remove` (multipart field `file`) and
`GET /api/remove?url=`, answering the cut-out itself (`image/png`) in the same response.

A rembg client (`curl -F file=@photo.jpg …/api/remove -o out.png`, rembg's `requests`
example) works unchanged: rembg's parameter names, defaults and places (model, a, af, ab, ae,
om, ppm, dc, vm as form fields or query parameters; bgc and extras as query parameters, form
fields taken too). What each maps to: `gateway.intake.rembg_params`. The work goes through
the matting API's sync lane to the same workers as jobs (`gateway.pipeline.sync_remove`).

Behind the API keys like every route (401 without one when keys are set), and the key's job
quotas apply: a key at its concurrent, hourly or daily job limit gets the same 429 here
(a sync request is not a job and does not count towards them). The body is read by the
gateway itself, paced as uploads are (408 for a trickle) and cut at REMOVE_MAX_IMAGE_BYTES
plus `MULTIPART_SLACK_BYTES` as bytes arrive (413), before any multipart parsing; then the
image is probed (format, MAX_IMAGE_PIXELS, a full decode: 400) before any work is queued.

Answers: 200 `image/png`; 400 not a usable image, or `?url=` refused/failed; 401; 403 `?url=`
while REMOVE_URL_FETCH is off; 408; 413; 422 a missing `file`, a bad or unsupported parameter;
429 quota; 503 + Retry-After when the sync lane is full or no worker is up; 502 when the
stage failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from gateway.api.deps import GW, CallerDep
from gateway.api.docs import BINARY, errors
from gateway.api.errors import request_body
from gateway.errors import BadRequest, Forbidden, PayloadTooLarge, Unprocessable
from gateway.intake.pacing import paced
from gateway.intake.quotas import check_quota
from gateway.intake.rembg_params import PARAMETERS, parse_remove_params
from gateway.intake.url_fetch import fetch_image
from gateway.pipeline.sync_remove import SyncRequest
from gateway.state import GatewayState
from shared.imaging import ImageRejected, probe_image
from shared.logs import safe

__all__ = ["MULTIPART_SLACK_BYTES", "router"]

router = APIRouter(tags=["rembg API"])
log = logging.getLogger("gateway.api.remove")

MULTIPART_SLACK_BYTES = 64 * 1024
"""Room in a `POST /api/remove` body beside the largest image: multipart boundaries and the
parameters' fields."""
MAX_FORM_FIELDS = 32
"""Form fields a `POST /api/remove` body may carry (rembg's are eleven)."""
PNG = "image/png"

_PARAM_DOCS = {
    "model": "engine name (GET /models); default: the gateway's DEFAULT_MODEL",
    "a": "alpha matting (true: 422, not supported)", "af": "alpha matting foreground "
    "threshold 0-255", "ab": "alpha matting background threshold 0-255",
    "ae": "alpha matting erode size (>= 0)", "om": "only mask: the grey matte",
    "ppm": "post-process mask (true: 422)", "dc": "decontaminate (true: 422)",
    "vm": "ViTMatte (true: 422)", "bgc": "background colour r,g,b,a (alpha 255 or 0)",
    "extras": "JSON object; only {} is taken",
}
_DOC_PARAMETERS: list[dict[str, Any]] = [
    {"name": n, "in": "query", "required": False, "schema": {"type": "string"},
     "description": d} for n, d in _PARAM_DOCS.items()
]
_IMAGE_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"content": {PNG: {"schema": BINARY}},
          "description": "the cut-out (or, with om, the matte) as PNG"},
}


def _checked_image(gw: GatewayState, data: bytes) -> str:
    """The image's format, or 400 / 413 saying what is wrong with it."""
    limit = gw.settings.remove_max_image_bytes
    if not data:
        raise BadRequest("the file is empty")
    if len(data) > limit:
        raise PayloadTooLarge(f"image larger than the limit of {limit} bytes "
                              "(REMOVE_MAX_IMAGE_BYTES)")
    try:
        _w, _h, fmt = probe_image(data, gw.settings.max_image_pixels)
    except ImageRejected as exc:
        raise BadRequest(f"not a usable image: {exc}") from None
    return fmt


async def _answer(gw: GatewayState, caller: CallerDep, raw: Mapping[str, str],
                  data: bytes) -> Response:
    opts = parse_remove_params(gw.settings, raw)
    fmt = await asyncio.to_thread(_checked_image, gw, data)
    async with gw.db.read() as s:
        over = await check_quota(s, caller.key_hash, gw.settings)
    if over is not None:
        raise over
    png = await gw.sync.remove(SyncRequest(data, fmt, opts.model, opts.output, opts.options))
    log.info("api/remove: %s %d bytes -> %d bytes, model=%s output=%s for %s", fmt, len(data),
             len(png), opts.model, opts.output, caller.label)
    return Response(png, media_type=PNG)


def _params(request: Request, form: Mapping[str, Any] | None = None) -> dict[str, str]:
    raw = {k: v for k, v in request.query_params.items() if k in PARAMETERS}
    for k, v in (form or {}).items():
        if k in PARAMETERS and isinstance(v, str):
            raw[k] = v
    return raw


async def _capped(body: AsyncIterator[bytes], cap: int, limit: int) -> AsyncGenerator[bytes]:
    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > cap:
            raise PayloadTooLarge(f"request larger than an image of REMOVE_MAX_IMAGE_BYTES="
                                  f"{limit} bytes and its fields")
        yield chunk


@router.post("/api/remove", response_class=Response, responses={
    **_IMAGE_ANSWER, **errors(400, 408, 413, 422, 429, 502, 503)},
    openapi_extra={"parameters": _DOC_PARAMETERS, "requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string",
                                                                   "format": "binary"}}}}}}})
async def remove_upload(request: Request, gw: GW, caller: CallerDep) -> Response:
    """rembg's "Remove from Stream": the image as multipart field `file`; the cut-out back."""
    limit = gw.settings.remove_max_image_bytes
    cap = limit + MULTIPART_SLACK_BYTES
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise PayloadTooLarge(f"request larger than an image of REMOVE_MAX_IMAGE_BYTES={limit} "
                              "bytes and its fields")
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise Unprocessable("send the image as multipart/form-data field 'file' "
                            "(curl -F file=@photo.jpg)")
    body = _capped(paced(request_body(request), gw.settings), cap, limit)
    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=MAX_FORM_FIELDS,
                             max_part_size=MULTIPART_SLACK_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise Unprocessable(f"malformed multipart body: {exc.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Unprocessable("field 'file' is required: the image, as a file part "
                                "(curl -F file=@photo.jpg)")
        data = await upload.read()
        return await _answer(gw, caller, _params(request, dict(form.items())), data)
    finally:
        await form.close()


@router.get("/api/remove", response_class=Response, responses={
    **_IMAGE_ANSWER, **errors(400, 403, 413, 422, 429, 502, 503)},
    openapi_extra={"parameters": _DOC_PARAMETERS})
async def remove_url(
    request: Request, gw: GW, caller: CallerDep,
    url: Annotated[str, Query(description="URL of the image (REMOVE_URL_FETCH=1 only)")],
) -> Response:
    """rembg's "Remove from URL": the gateway fetches the image (public addresses only);
    off unless REMOVE_URL_FETCH is set (403)."""
    s = gw.settings
    if not s.remove_url_fetch:
        raise Forbidden("fetching ?url= is switched off on this server (REMOVE_URL_FETCH=0); "
                        "POST the image as multipart field 'file'")
    raw = _params(request)
    parse_remove_params(s, raw)  # a bad parameter costs no fetch
    data = await fetch_image(url, s.remove_max_image_bytes,
                             allow_private=s.remove_url_allow_private)
    log.info("api/remove: fetched %s (%d bytes)", safe(url[:200]), len(data))
    return await _answer(gw, caller, raw, data)
