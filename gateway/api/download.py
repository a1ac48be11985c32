"""`GET /download/{job_id}`: the result zip, streamed with a known length.

A finished job's stored zip (`gateway.results.stored_zip`, ZIP_STORE) is sent as the file it
is: Starlette's `FileResponse`, with ranges, and the whole file sent by the kernel where the
server offers the path-send extension (`shared.serve.PATHSEND`). Until it is stored, and for a
job without one, the zip is made as it is sent:
A zip made by worker processes (`gateway.results.zip_processes`) is written straight into
the socket when the server lends it (`shared.serve.SendTap`): the processes' parts are
spliced from their pipes by a thread of the download's own, and the event loop only writes
the status line and headers (BENCHMARKS.md, "The download, sixth pass"). Any other zip, or
one on a server without the tap, is streamed through the loop a few pieces ahead
(`gateway.results.send_ahead`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from gateway.api.deps import GW, CallerDep, ReadDB, StorageDep, job_or_404
from gateway.api.docs import BINARY, errors
from gateway.errors import ClientGone
from gateway.results.job_report import job_models
from gateway.results.send_ahead import send_ahead
from gateway.results.stored_zip import finished_zip
from gateway.results.zip_stream import JobZip, zip_chunks
from gateway.results.zip_stream import job_zip as make_zip
from shared.serve import SEND_TAP, SendTap
from shared.states import FINAL_JOB_STATES, JobState
from shared.threads import in_own_thread

__all__ = ["router"]

router = APIRouter(tags=["download"])


@router.get(
    "/download/{job_id}",
    response_class=StreamingResponse,
    responses={
        200: {"description": "the result zip", "content": {"application/zip": {"schema": BINARY}}},
        206: {"description": "a range of a finished job's stored zip (`Range: bytes=…`)",
              "content": {"application/zip": {"schema": BINARY}}},
        **errors(404, 409, 410, 416),
    },
)
async def download(
    request: Request,
    job_id: str,
    db: ReadDB,
    storage: StorageDep,
    caller: CallerDep,
    gw: GW,
    partial: Annotated[bool, Query(description="what is done so far, before the end")] = False,
) -> Response:
    """The job's zip: `matting_output/…png`, `final_results/…_compare.jpg`, `report.json`,
    `report.csv`, `index.html`. Before the job ends only with `?partial=1`.

    The report files of a finished job are those written once when it ended (README, "The
    report"); a partial download's are written during this request's walk of the rows. Once
    a finished job's zip is stored (README, "The stored zip") it answers `Range` requests
    (`Accept-Ranges: bytes`): a cut download resumes where it stopped."""
    job = await job_or_404(db, job_id, caller)
    state = JobState(job.state)
    if state == JobState.CANCELLED:
        raise HTTPException(410, detail="job was cancelled; its files are gone")
    final = state in FINAL_JOB_STATES
    if not final and not partial:
        raise HTTPException(409, detail="job is still running; use ?partial=1")
    reports, zips = gw.scheduler.reports, gw.scheduler.zips
    stored = None if not final or zips is None else await asyncio.to_thread(zips.ready, job_id)
    if stored is not None:
        return StoredZip(stored, media_type="application/zip", filename=f"{job_id}.zip")
    if final:
        files = await reports.files(job)  # the report folder's files, or its objects on S3
        job_zip = await finished_zip(gw.db, storage, job, files, gw.settings)
    else:  # a running job's files may still be replaced by a retry: its zip is not pre-sized
        async with reports.partial_folder(job_id) as tmp:
            job_zip = await make_zip(gw.db, storage, job_id, job.output, job_models(job),
                                     report=None,
                                     partial=tmp, suffix=job.cutout_suffix)
    headers = {"Content-Disposition": f'attachment; filename="{job_id}.zip"'}
    if job_zip.size is not None:
        headers["Content-Length"] = str(job_zip.size)
    if job_zip.splice is not None and SEND_TAP in request.scope.get("extensions", {}):
        return SplicedZip(job_zip, headers)
    return StreamingResponse(
        send_ahead(zip_chunks(job_zip)), media_type="application/zip", headers=headers
    )


class StoredZip(FileResponse):
    """A finished job's stored zip: Starlette's `FileResponse` (ranges, `If-Range`, the whole
    file by path-send), whose answers to a bad `Range` (400, 416: plain text there) are the
    API's JSON `{"detail": …}` here, as every other error."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: list[Message] = []

        async def json_errors(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (400, 416):
                held.append(message)  # sent with its body, once that is known
                return
            if not held:
                await send(message)
                return
            if message["type"] != "http.response.body" or message.get("more_body", False):
                return
            start = held[0]
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in start["headers"]}
            if start["status"] == 416:
                size = headers.get("content-range", "").rpartition("/")[2]
                detail = f"range not satisfiable: the zip has {size} bytes"
            else:
                detail = f"bad Range header: {bytes(message.get('body', b'')).decode()}"
            body = json.dumps({"detail": detail}).encode()
            kept = [(k, v) for k, v in start["headers"]
                    if k.lower() not in (b"content-type", b"content-length")]
            await send({**start, "headers": [*kept, (b"content-type", b"application/json"),
                                             (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await super().__call__(scope, receive, json_errors)


class SplicedZip(StreamingResponse):
    """A zip made by worker processes, written into the socket by a thread of its own
    (`JobZip.splice`) once the headers are out; streamed like any other when the server
    cannot lend the socket after all (`SendTap.take` answers None)."""

    def __init__(self, job_zip: JobZip, headers: dict[str, str]) -> None:
        super().__init__(send_ahead(zip_chunks(job_zip)), media_type="application/zip",
                         headers=headers)
        self.job_zip = job_zip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tap: SendTap = scope["extensions"][SEND_TAP]
        splice = self.job_zip.splice
        assert splice is not None
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        taken = await tap.take()
        if taken is None:
            async for piece in self.body_iterator:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        fd, count = taken
        sent = 0
        try:
            sent = await in_own_thread(lambda stop: splice(fd, stop), "zip-splice")
        except ClientGone:
            return  # nobody to answer: the connection closes, short of its length
        finally:
            tap.release(fd, sent if sent == count else 0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
