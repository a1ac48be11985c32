"""`GET /download/{job_id}`: the result zip, streamed with a known length."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from gateway.api.deps import GW, CallerDep, ReadDB, StorageDep, job_or_404
from gateway.api.docs import BINARY, errors
from gateway.results.job_report import job_models
from gateway.results.send_ahead import send_ahead
from gateway.results.zip_processes import process_count
from gateway.results.zip_stream import job_zip as make_zip
from gateway.results.zip_stream import zip_chunks
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
    gw: GW,
    partial: Annotated[bool, Query(description="what is done so far, before the end")] = False,
) -> StreamingResponse:
    """The job's zip: `matting_output/…png`, `final_results/…_compare.jpg`, `report.json`,
    `report.csv`, `index.html`. Before the job ends only with `?partial=1`.

    The report files of a finished job are those written once when it ended (README, "The
    report"); a partial download's are written during this request's walk of the rows."""
    job = await job_or_404(db, job_id, caller)
    state = JobState(job.state)
    if state == JobState.CANCELLED:
        raise HTTPException(410, detail="job was cancelled; its files are gone")
    final = state in FINAL_JOB_STATES
    if not final and not partial:
        raise HTTPException(409, detail="job is still running; use ?partial=1")
    reports, models = gw.scheduler.reports, job_models(job)
    if final:
        files = await reports.files(job)  # the report folder's files, or its objects on S3
        job_zip = await make_zip(gw.db, storage, job_id, job.output, models, report=files,
                                 suffix=job.cutout_suffix,
                                 processes=process_count(gw.settings.zip_processes),
                                 process_min=gw.settings.zip_process_min_members)
    else:  # a running job's files may still be replaced by a retry: its zip is not pre-sized
        async with reports.partial_folder(job_id) as tmp:
            job_zip = await make_zip(gw.db, storage, job_id, job.output, models, report=None,
                                     partial=tmp, suffix=job.cutout_suffix)
    headers = {"Content-Disposition": f'attachment; filename="{job_id}.zip"'}
    if job_zip.size is not None:
        headers["Content-Length"] = str(job_zip.size)
    return StreamingResponse(
        send_ahead(zip_chunks(job_zip)), media_type="application/zip", headers=headers
    )
