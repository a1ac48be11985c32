"""Resumable uploads: the tus 1.0 protocol under `/files/` (core, creation, termination,
checksum with sha1, expiration). Our own subset rather than tuspyserver: see docs/tus.md."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid

from fastapi import APIRouter, Request, Response

from gateway.api.deps import GW, CallerDep
from gateway.api.docs import errors, headers
from gateway.api.errors import request_body
from gateway.db import repo
from gateway.errors import ClientGone, GatewayError, UploadStalled
from gateway.intake.jobs import OUTPUT_OPTION_KEYS, validate_job_options, validate_output_options
from gateway.intake.pacing import paced
from gateway.intake.quotas import enforce_upload_limits
from gateway.intake.receive import upload_extension
from gateway.intake.tus_store import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    TUS_VERSION,
    UploadBusy,
    http_date,
    parse_checksum,
    parse_metadata,
    tus_error,
)
from shared.limits import S3_MAX_OBJECT_BYTES
from shared.serve import BODY_TAP
from shared.timing import TUS_EXPIRY_S, TUS_LOCK_WAIT_S

__all__ = ["router"]

router = APIRouter(prefix="/files", tags=["tus"], responses=errors(400, 404, 412))

OFFSET_TYPE = "application/offset+octet-stream"


def _base_headers(gw: GW) -> dict[str, str]:
    return {
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": EXTENSIONS,
        "Tus-Checksum-Algorithm": CHECKSUM_ALGORITHMS,
        "Tus-Max-Size": str(_max_size(gw)),
    }


def _max_size(gw: GW) -> int:
    """MAX_UPLOAD_SIZE; on object storage never above S3's largest object, which an upload
    could not be completed into."""
    limit = gw.settings.max_upload_size
    return min(limit, S3_MAX_OBJECT_BYTES) if gw.tus.on_objects else limit


def _require_tus(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise tus_error(412, f"send 'Tus-Resumable: {TUS_VERSION}'", **{"Tus-Version": TUS_VERSION})


def _check_id(upload_id: str) -> None:
    if len(upload_id) != 32 or not all(c in "0123456789abcdef" for c in upload_id):
        raise tus_error(404, f"unknown or expired upload {upload_id!r}")


def _int_header(request: Request, name: str) -> int:
    raw = request.headers.get(name)
    if raw is None or not raw.strip().isdigit():
        raise tus_error(400, f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


@router.options("/", status_code=204, response_class=Response)
@router.options("/{upload_id}", status_code=204, response_class=Response)
async def tus_options(gw: GW) -> Response:
    """What this server speaks (no Tus-Resumable needed)."""
    return Response(status_code=204, headers=_base_headers(gw))


@router.post(
    "/",
    status_code=201,
    response_class=Response,
    responses={
        201: headers("created; no body", Location="the upload's URL",
                     Upload_Offset="0", Upload_Expires="when an unfinished upload goes"),
        **errors(413, 429, 507),
    },
)
async def tus_create(request: Request, gw: GW, caller: CallerDep) -> Response:
    """Creation: `Upload-Length` (no deferred length) and `Upload-Metadata` with `filename`;
    `autojob 1` with `model`/`output`/`callback_url` (and the output options `format`,
    `max_size`, `background`, `crop`) makes the job even if the client never
    sends `POST /jobs` (docs/tus.md)."""
    _require_tus(request)
    if request.headers.get("upload-defer-length") is not None:
        raise tus_error(400, "Upload-Defer-Length is not supported: send Upload-Length")
    length = _int_header(request, "upload-length")
    limit = _max_size(gw)
    if length > limit:
        raise tus_error(413, f"upload larger than the limit of {limit} bytes")
    if length == 0:
        raise tus_error(400, "empty upload: Upload-Length is 0")
    meta = parse_metadata(request.headers.get("upload-metadata"))
    filename = meta.get("filename", "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if filename:
        upload_extension(filename)  # 400 now rather than after the last byte
    if meta.get("autojob", "").strip() not in ("", "0"):
        _, output, _ = validate_job_options(gw.settings, meta.get("model"),
                                            meta.get("output") or "rgba",
                                            meta.get("callback_url"))
        validate_output_options(output, {k: meta.get(k) for k in OUTPUT_OPTION_KEYS})
    if not gw.tus.on_objects:  # on S3 the bytes never land on this disk (tus_parts)
        free = (await asyncio.to_thread(shutil.disk_usage, gw.storage.root)).free
        if free - length < gw.settings.min_free_disk:
            raise tus_error(507, f"not enough disk space for {length} bytes "
                            f"(keeping {gw.settings.min_free_disk} bytes free)")
    upload_id = uuid.uuid4().hex
    where = await gw.tus.new_bytes(upload_id)
    now = time.time()
    expires = now + min(TUS_EXPIRY_S, gw.settings.tus_max_lifetime_s)
    try:
        async with gw.db.write() as s:
            # Per-key open uploads and declared bytes, in the transaction that adds this one.
            await enforce_upload_limits(s, caller.key_hash, length, gw.settings, now)
            await repo.add_upload(
                s, upload_id, length=length, filename=filename or "upload.bin",
                metadata_json=meta, api_key_hash=caller.key_hash, created_at=now,
                expires_at=expires, **where,
            )
    except BaseException as exc:
        await asyncio.shield(gw.tus.drop_bytes(upload_id, where.get("multipart_id")))
        if isinstance(exc, GatewayError):
            exc.headers["Tus-Resumable"] = TUS_VERSION
        raise
    return Response(status_code=201, headers={
        "Tus-Resumable": TUS_VERSION, "Location": f"/files/{upload_id}",
        "Upload-Expires": http_date(expires), "Upload-Offset": "0",
    })


@router.head(
    "/{upload_id}",
    response_class=Response,
    responses={200: headers("the upload's state; no body",
                            Upload_Offset="bytes the server holds",
                            Upload_Length="the declared size")},
)
async def tus_head(upload_id: str, request: Request, gw: GW, caller: CallerDep) -> Response:
    """Where to resume: `Upload-Offset` is the size of the file on disk (on object storage:
    the parts and tail stored, README "Uploads on object storage"). A PATCH in flight is
    given a moment to settle, so a client that was just cut off reads the final offset."""
    _require_tus(request)
    _check_id(upload_id)
    await gw.tus.get_upload(upload_id, owner=caller.owner)  # not even a lock for another's
    try:
        async with gw.tus.locks.hold(upload_id, TUS_LOCK_WAIT_S):
            pass
    except UploadBusy:
        pass
    row = await gw.tus.get_upload(upload_id, owner=caller.owner)
    size = await gw.tus.offset(row)
    if row.job_id is not None:
        size = row.length
    if size is None:
        raise tus_error(404, f"upload {upload_id!r} has lost its data")
    headers = {"Tus-Resumable": TUS_VERSION, "Upload-Offset": str(size),
               "Upload-Length": str(row.length), "Cache-Control": "no-store"}
    if row.completed_at is None:
        headers["Upload-Expires"] = http_date(row.expires_at)
    return Response(status_code=200, headers=headers)


@router.patch(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    responses=errors(408, 409, 413, 415, 460, 507),
)
async def tus_patch(upload_id: str, request: Request, gw: GW, caller: CallerDep) -> Response:
    """Append the body at `Upload-Offset`, which must equal the bytes already on disk. A body
    idle for UPLOAD_IDLE_TIMEOUT_S (or below MIN_UPLOAD_RATE) ends with 408, keeping what
    arrived; the expiry moves on, but never past the upload's hard deadline."""
    _require_tus(request)
    _check_id(upload_id)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != OFFSET_TYPE:
        raise tus_error(415, f"PATCH needs 'Content-Type: {OFFSET_TYPE}'")
    offset = _int_header(request, "upload-offset")
    checksum = parse_checksum(request.headers.get("upload-checksum"))
    await gw.tus.get_upload(upload_id, owner=caller.owner)  # another's is a 404, not a 409
    try:
        async with gw.tus.locks.hold(upload_id, TUS_LOCK_WAIT_S):
            row = await gw.tus.get_upload(upload_id, owner=caller.owner)
            if row.job_id is not None:
                raise tus_error(409, f"upload already used by job {row.job_id}")
            size = await gw.tus.offset(row)
            if size is None:
                raise tus_error(404, f"upload {upload_id!r} has lost its data")
            if offset != size:
                raise tus_error(409, f"Upload-Offset {offset} does not match the upload's "
                                f"offset {size}", **{"Upload-Offset": str(size)})
            length = row.length or 0
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and size + int(declared) > length:
                raise tus_error(413, f"the body goes past Upload-Length ({length} bytes)")
            try:
                size = await gw.tus.append(row, size, paced(request_body(request), gw.settings),
                                           checksum, request.scope.get("extensions", {}).get(
                                               BODY_TAP))
            finally:
                # Also after a cut: the bytes that stayed count, and the expiry moves on.
                now_size = await gw.tus.offset(row)
                row = await asyncio.shield(gw.tus.mark_progress(row, now_size or 0))
    except UploadBusy:
        raise tus_error(409, "another PATCH to this upload is in progress") from None
    except ClientGone:
        raise tus_error(400, "the client disconnected; HEAD tells where to resume") from None
    except UploadStalled as exc:
        raise tus_error(408, f"{exc.detail}; HEAD tells where to resume") from None
    return Response(status_code=204, headers={
        "Tus-Resumable": TUS_VERSION, "Upload-Offset": str(size),
        "Upload-Expires": http_date(row.expires_at),
    })


@router.delete(
    "/{upload_id}", status_code=204, response_class=Response, responses=errors(409)
)
async def tus_delete(upload_id: str, request: Request, gw: GW, caller: CallerDep) -> Response:
    """Termination: the upload's row and bytes go (a job made from it is not touched)."""
    _require_tus(request)
    _check_id(upload_id)
    await gw.tus.get_upload(upload_id, owner=caller.owner)  # another's is a 404, not a 409
    try:
        async with gw.tus.locks.hold(upload_id, TUS_LOCK_WAIT_S):
            await gw.tus.get_upload(upload_id, owner=caller.owner)
            await gw.tus.remove_upload(upload_id)
    except UploadBusy:
        raise tus_error(409, "another request on this upload is in progress") from None
    return Response(status_code=204, headers={"Tus-Resumable": TUS_VERSION})

