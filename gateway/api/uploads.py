"""`POST /upload`: one request, one job. The body is streamed to disk by `gateway.intake.receive`;
ingest then runs in the background while the client polls `/status`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from gateway.api.auth import key_hash
from gateway.api.deps import GW, ApiKey
from gateway.api.docs import errors
from gateway.api.errors import request_body
from gateway.db import repo
from gateway.intake.jobs import OUTPUTS, job_links, new_job, validate_job_options
from gateway.intake.quotas import enforce_quota
from gateway.intake.receive import check_free_space, receive_upload
from gateway.state import GatewayState
from shared.responses import JobLinks
from shared.states import JobState

__all__ = ["OUTPUTS", "router", "validate_job_options"]

router = APIRouter(tags=["upload"])
log = logging.getLogger("gateway.intake.receive")

@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobLinks,
    responses=errors(400, 413, 415, 429, 507),
)
async def upload(
    request: Request,
    gw: GW,
    api_key: ApiKey,
    model: Annotated[str | None, Query(description="engine name(s), comma-separated")] = None,
    output: Annotated[str, Query(description="rgba, alpha or both")] = "rgba",
    callback_url: Annotated[str | None, Query(description="webhook for the job's end")] = None,
    filename: Annotated[str | None, Query(description="name of a raw-body upload")] = None,
) -> JobLinks:
    """Upload an archive (.zip, .tar, .tar.gz) or one image, as multipart field `file` or as
    the raw body; answers 202 with the job's status and download URLs."""
    model, output, callback_url = validate_job_options(gw.settings, model, output, callback_url)
    length = request.headers.get("content-length", "")
    await asyncio.to_thread(check_free_space, gw.storage.root, gw.settings.min_free_disk,
                            int(length) if length.isdigit() else 0)
    job_id = uuid.uuid4().hex
    async with gw.db.write() as s:
        # Checked in the transaction that creates the job: two racing uploads cannot share a slot.
        await enforce_quota(s, key_hash(api_key), gw.settings)
        await new_job(
            s, job_id, model=model, output=output, callback_url=callback_url,
            api_key_hash=key_hash(api_key), filename=filename or "",
        )
    try:
        received = await receive_upload(
            request_body(request), request.headers, gw.storage.job_input(job_id),
            gw.settings.max_upload_size, gw.settings.min_free_disk, filename,
        )
    except BaseException:
        # No half job: the row and whatever reached the disk go, the error propagates.
        await asyncio.shield(_drop(gw, job_id))
        raise
    async with gw.db.write() as s:
        await repo.set_job(
            s, job_id, state=JobState.INGESTING.value, filename=received.filename,
            upload_path=gw.storage.relative(received.path), updated_at=time.time(),
        )
    gw.start_ingest(job_id)
    log.info("job %s: %s (%d bytes), model=%s output=%s", job_id, received.filename,
             received.size, model, output)
    return job_links(job_id)


async def _drop(gw: GatewayState, job_id: str) -> None:
    async with gw.db.write() as s:
        await repo.delete_job(s, job_id)
    await asyncio.to_thread(gw.storage.remove_job, job_id)
