"""One image in, its cut-out out: the MCP tool `remove_background` (`gateway.api.mcp`).

It does not use `/api/remove`'s sync lane (`gateway.pipeline.sync_remove`): the image
becomes an ordinary one-image job through the same
intake as `POST /upload` (options checked by `validate_job_options`, the caller's quota, the
file written by `receive_upload`, then the background ingest), goes through the same stages
and workers as any job, and the tool waits (at most MCP_WAIT_S) for the job to end before it
reads the cut-out from disk. The job stays listed like any other (`/jobs`, `/download`, its
report), so what an agent did can be seen and downloaded again; it counts against the key's
quotas as any job does, and DELETE /jobs/{id} removes it. A wait that runs out leaves the job
running and says so, with its id.

Input is checked before anything is created (a bad image costs nothing else): the base64 text
against MCP_MAX_IMAGE_BYTES before it is decoded, the decoded bytes against it again, and the
image itself by `shared.imaging.probe_image` (format, MAX_IMAGE_PIXELS, a full decode).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.api.auth import Caller
from gateway.api.uploads import job_from_body
from gateway.db import repo
from gateway.errors import BadRequest
from gateway.intake.jobs import validate_job_options
from gateway.state import GatewayState
from shared.formats import OutputMode
from shared.imaging import ImageRejected, probe_image
from shared.states import FINAL_JOB_STATES, JobState, TaskState
from shared.storage import model_output_rel

__all__ = ["POLL_S", "CutOut", "WaitExpired", "decode_image", "one_image_job", "wait_cut_out"]

POLL_S = 0.2
"""Seconds between two looks at the job while `remove_background` waits (a snapshot read of
one row: cheap beside the scheduler's writes)."""
DATA_URL_PREFIX = "data:"
"""`image_base64` may be a data URL (`data:image/png;base64,...`): agents often hold one."""


@dataclass(frozen=True)
class CutOut:
    """The finished one-image job: its id, the image's size and the PNG files it produced
    (the cut-out or matte; for output=both the cut-out then the matte)."""

    job_id: str
    width: int
    height: int
    pngs: list[bytes]


class WaitExpired(Exception):
    """The job did not end within MCP_WAIT_S; it keeps running."""


def decode_image(text: str, max_bytes: int, max_pixels: int) -> tuple[bytes, str, int, int]:
    """(image bytes, file name, width, height) of `image_base64`, or `BadRequest` saying what
    is wrong. The text is measured before it is decoded, so an oversized one costs no memory
    beyond what the request already took."""
    if text.startswith(DATA_URL_PREFIX):
        text = text.partition(",")[2]
    text = "".join(text.split())  # line breaks of a wrapped base64 text
    if len(text) > 4 * ((max_bytes + 2) // 3):
        raise BadRequest(f"image larger than the limit of {max_bytes} bytes (MCP_MAX_IMAGE_BYTES)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"image_base64 is not valid base64: {exc}") from None
    if not data:
        raise BadRequest("image_base64 is empty")
    if len(data) > max_bytes:
        raise BadRequest(f"image larger than the limit of {max_bytes} bytes (MCP_MAX_IMAGE_BYTES)")
    try:
        width, height, fmt = probe_image(data, max_pixels)
    except ImageRejected as exc:
        raise BadRequest(f"not a usable image: {exc}") from None
    return data, f"image.{fmt.lower()}", width, height


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def one_image_job(
    gw: GatewayState, caller: Caller, data: bytes, filename: str, model: str | None, output: str
) -> str:
    """A job of the one image, created as `POST /upload` creates one; its id. One model only:
    the answer is one image's cut-out (model against model is a job: `start_job`)."""
    model, output, _ = validate_job_options(gw.settings, model, output, None)
    if "," in model:
        raise BadRequest("remove_background takes one model; compare models in a job "
                         "(upload with tus, then start_job with model=a,b)")
    job_id, _ = await job_from_body(
        gw, caller, _one_chunk(data), {"content-type": "application/octet-stream"}, filename,
        model=model, output=output, callback_url=None, declared=len(data),
    )
    return job_id


async def wait_cut_out(gw: GatewayState, job_id: str, width: int, height: int) -> CutOut:
    """Wait for the job to end, then its PNG(s); `BadRequest` with the reason when its image
    failed, `WaitExpired` past MCP_WAIT_S."""
    deadline = time.monotonic() + gw.settings.mcp_wait_s
    while True:
        async with gw.db.read() as s:
            job = await repo.get_job(s, job_id)
            tasks = await repo.list_tasks(s, job_id, None, 1, 0) if job is not None else []
        if job is None:
            raise BadRequest(f"job {job_id} is gone")
        if JobState(job.state) in FINAL_JOB_STATES:
            break
        if time.monotonic() >= deadline:
            raise WaitExpired(job_id)
        await asyncio.sleep(POLL_S)
    task = tasks[0] if tasks else None
    if task is None or task.state != TaskState.COMPLETED.value or not task.matting_output:
        why = (task.error if task is not None else None) or job.error or job.state
        raise BadRequest(f"job {job_id} ended {job.state}: {gw.storage.scrub(why)}")
    rels = [task.matting_output]
    if job.output == OutputMode.BOTH:
        rels.append(model_output_rel(task.matting_output, job.model, 0, alpha=True))
    pngs = [await asyncio.to_thread(gw.storage.objects.get, rel) for rel in rels]  # file or S3
    return CutOut(job_id, width, height, pngs)
