"""The two ways an upload becomes a job. `POST /upload`: one request, one job; the body is
streamed to disk by `gateway.intake.receive`. `POST /jobs`: a finished resumable (tus) upload
becomes a job. Either way ingest then runs in the background while the client polls
`/status`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, Field, JsonValue

from gateway.api.auth import Caller
from gateway.api.deps import GW, CallerDep
from gateway.api.docs import errors
from gateway.api.errors import request_body
from gateway.db import repo
from gateway.intake.jobs import (
    OUTPUTS,
    job_links,
    new_job,
    validate_job_options,
    validate_output_options,
)
from gateway.intake.landing import keep_upload
from gateway.intake.pacing import Pace, paced
from gateway.intake.quotas import enforce_quota
from gateway.intake.receive import Received, check_free_space, receive_upload
from gateway.intake.splice import SocketBody
from gateway.state import GatewayState
from shared.finishing import OutputOptions
from shared.logs import safe
from shared.responses import JobLinks
from shared.serve import BODY_TAP
from shared.states import JobState

__all__ = ["OUTPUTS", "JobFromUpload", "job_from_body", "router", "validate_job_options"]

router = APIRouter(tags=["upload"])
log = logging.getLogger("gateway.intake.receive")

@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobLinks,
    responses=errors(400, 408, 413, 415, 429, 507),
)
async def upload(
    request: Request,
    gw: GW,
    caller: CallerDep,
    model: Annotated[str | None, Query(description="engine name(s), comma-separated")] = None,
    output: Annotated[str, Query(description="rgba, alpha or both")] = "rgba",
    callback_url: Annotated[str | None, Query(description="webhook for the job's end")] = None,
    filename: Annotated[str | None, Query(description="name of a raw-body upload")] = None,
    format: Annotated[str | None, Query(description="cut-out format: png, webp or avif")] = None,
    max_size: Annotated[str | None, Query(
        description="longest side of the cut-out in px (≥ 16; scaled down, never up)")] = None,
    background: Annotated[str | None, Query(
        description="colour under the cut-out (#ffffff, #fff) or transparent")] = None,
    crop: Annotated[str | None, Query(
        description="crop to the object plus this margin in % of its box (0: tight)")] = None,
) -> JobLinks:
    """Upload an archive (.zip, .tar, .tar.gz) or one image, as multipart field `file` or as
    the raw body; answers 202 with the job's status and download URLs."""
    model, output, callback_url = validate_job_options(gw.settings, model, output, callback_url)
    options = validate_output_options(output, {"format": format, "max_size": max_size,
                                               "background": background, "crop": crop})
    length = request.headers.get("content-length", "")
    job_id, received = await job_from_body(
        gw, caller, paced(request_body(request), gw.settings), request.headers, filename,
        model=model, output=output, callback_url=callback_url, options=options,
        declared=int(length) if length.isdigit() else 0,
        socket_body=request.scope.get("extensions", {}).get(BODY_TAP),
    )
    log.info("job %s: %s (%d bytes), model=%s output=%s", job_id, safe(received.filename),
             received.size, model, output)
    return job_links(job_id)


async def job_from_body(
    gw: GatewayState,
    caller: Caller,
    body: AsyncIterator[bytes],
    headers: Mapping[str, str],
    filename: str | None,
    *,
    model: str,
    output: str,
    callback_url: str | None,
    options: OutputOptions | None = None,
    declared: int = 0,
    socket_body: SocketBody | None = None,
) -> tuple[str, Received]:
    """A job from one request body (`POST /upload`, the MCP tool `remove_background`): the
    job row under the caller's quota, the body streamed to disk, then ingest in the background.
    The job id and what was received; on any failure no half job is left. `socket_body` (the
    server's `BodyTap`): a raw body is spliced from the socket rather than read from `body`."""
    await asyncio.to_thread(check_free_space, gw.storage.root, gw.settings.min_free_disk,
                            declared)
    job_id = uuid.uuid4().hex
    # The job's lock before its row (several gateways: no other takes an upload in progress
    # for a dead one's); held through the ingest (`GatewayState.take_over_jobs`).
    await gw.hold_job(job_id)
    try:
        async with gw.db.write() as s:
            # Checked in the transaction that creates the job: two racing uploads cannot
            # share a slot.
            await enforce_quota(s, caller.key_hash, gw.settings)
            await new_job(
                s, job_id, model=model, output=output, callback_url=callback_url,
                api_key_hash=caller.key_hash, filename=filename or "", options=options,
            )
    except BaseException:
        await asyncio.shield(gw.release_job(job_id))
        raise
    try:
        received = await receive_upload(
            body, headers, gw.storage.job_input(job_id), gw.settings.max_upload_size,
            gw.settings.min_free_disk, filename, socket_body, Pace(gw.settings),
        )
        # On S3 the spooled body is stored as its object before the 202, so any gateway can
        # ingest it; this one still reads its local copy (gateway.intake.landing).
        await asyncio.to_thread(keep_upload, gw.storage, received.path)
    except BaseException:
        # No half job: the row and whatever reached the disk go, the error propagates. A body
        # cut for being idle or too slow (408) lands here too, so it frees its quota slot.
        await asyncio.shield(_drop(gw, job_id))
        raise
    async with gw.db.write() as s:
        await repo.set_job(
            s, job_id, state=JobState.INGESTING.value, filename=received.filename,
            upload_path=gw.storage.relative(received.path), updated_at=time.time(),
        )
    gw.start_ingest(job_id)
    return job_id, received


async def _drop(gw: GatewayState, job_id: str) -> None:
    try:
        async with gw.db.write() as s:
            await repo.delete_job(s, job_id)
        await asyncio.to_thread(gw.storage.remove_job, job_id)
    finally:
        await gw.release_job(job_id)


class JobFromUpload(BaseModel):
    upload_id: str = Field(description="the last path segment of the upload's Location")
    model: str | None = Field(default=None, description="engine name(s), comma-separated")
    output: str = Field(default="rgba", description="rgba, alpha or both")
    callback_url: str | None = Field(default=None, description="webhook for the job's end")
    filename: str | None = Field(
        default=None, description="overrides the upload's `filename` metadata (sets the type)"
    )
    # output options: any JSON here, checked by `validate_output_options` (a 400 naming the
    # field, where a typed field would coerce `true` to 1 or answer a framework 422)
    format: JsonValue = Field(default=None, description="cut-out format: png, webp or avif")
    max_size: JsonValue = Field(
        default=None, description="longest side of the cut-out in px (≥ 16)")
    background: JsonValue = Field(
        default=None, description="colour under the cut-out (#ffffff) or transparent")
    crop: JsonValue = Field(
        default=None, description="crop to the object plus this margin in % of its box")


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobLinks,
    responses=errors(400, 404, 409, 429),
)
async def create_job_from_upload(body: JobFromUpload, gw: GW, caller: CallerDep) -> JobLinks:
    """Start a job on a finished tus upload; 409 while it is unfinished or once it has been
    used (the detail names the job it became), 404 for an unknown or expired one or another
    tenant's."""
    job_id = await gw.tus.job_from_upload(
        body.upload_id, model=body.model, output=body.output,
        callback_url=body.callback_url, api_key_hash=caller.key_hash, filename=body.filename,
        owner=caller.owner,
        finishing={"format": body.format, "max_size": body.max_size,
                   "background": body.background, "crop": body.crop},
    )
    return job_links(job_id)
