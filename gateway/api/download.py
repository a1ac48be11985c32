"""`GET /download/{job_id}`: the result zip, streamed with a known length."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from gateway.api.deps import CallerDep, ReadDB, StorageDep, job_or_404
from gateway.api.docs import BINARY, errors
from gateway.db import repo
from gateway.results.zip_stream import build_zip, zip_chunks
from shared.states import FINAL_JOB_STATES, JobState

__all__ = ["router"]

router = APIRouter(tags=["download"])


@router.get(
    "/download/{job_id}",
    response_class=StreamingResponse,
    responses={
        200: {"description": "the result zip", "content": {"application/zip": {"schema": BINARY}}},
        **errors(404, 409, 410),
    },
)
async def download(
    job_id: str,
    db: ReadDB,
    storage: StorageDep,
    caller: CallerDep,
    partial: Annotated[bool, Query(description="what is done so far, before the end")] = False,
) -> StreamingResponse:
    """The job's zip: `matting_output/…png`, `final_results/…_compare.jpg`, `report.json`,
    `report.csv`, `index.html`. Before the job ends only with `?partial=1`."""
    job = await job_or_404(db, job_id, caller)
    state = JobState(job.state)
    if state == JobState.CANCELLED:
        raise HTTPException(410, detail="job was cancelled; its files are gone")
    final = state in FINAL_JOB_STATES
    if not final and not partial:
        raise HTTPException(409, detail="job is still running; use ?partial=1")
    tasks = await repo.report_rows(db, job_id)
    # A running job's files may still be replaced by a retry, so its zip is not pre-sized.
    models = [m for m in job.model.split(",") if m]
    job_zip = await asyncio.to_thread(
        build_zip, storage, job_id, job.output, tasks, models=models, sized=final
    )
    headers = {"Content-Disposition": f'attachment; filename="{job_id}.zip"'}
    if job_zip.size is not None:
        headers["Content-Length"] = str(job_zip.size)
    return StreamingResponse(
        iterate_in_threadpool(zip_chunks(job_zip)), media_type="application/zip", headers=headers
    )
