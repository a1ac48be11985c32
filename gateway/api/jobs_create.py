"""`POST /jobs`: a finished resumable upload becomes a job (the tus counterpart of
`POST /upload`)."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from gateway.api.auth import key_hash
from gateway.api.deps import GW, ApiKey
from gateway.api.docs import errors
from gateway.intake.jobs import job_links
from gateway.intake.tus_uploads import job_from_upload
from shared.responses import JobLinks

__all__ = ["JobFromUpload", "router"]

router = APIRouter(tags=["upload"])


class JobFromUpload(BaseModel):
    upload_id: str = Field(description="the last path segment of the upload's Location")
    model: str | None = Field(default=None, description="engine name(s), comma-separated")
    output: str = Field(default="rgba", description="rgba, alpha or both")
    callback_url: str | None = Field(default=None, description="webhook for the job's end")
    filename: str | None = Field(
        default=None, description="overrides the upload's `filename` metadata (sets the type)"
    )


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobLinks,
    responses=errors(400, 404, 409, 429),
)
async def create_job_from_upload(body: JobFromUpload, gw: GW, api_key: ApiKey) -> JobLinks:
    """Start a job on a finished tus upload; 409 while it is unfinished or once it has been
    used (the detail names the job it became), 404 for an unknown or expired one."""
    job_id = await job_from_upload(
        gw, body.upload_id, model=body.model, output=body.output,
        callback_url=body.callback_url, api_key_hash=key_hash(api_key), filename=body.filename,
    )
    return job_links(job_id)
