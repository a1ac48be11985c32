"""The web page at `/`: upload, live job list, per-job gallery (files in `gateway/web/`).

The page, its static files and `/api-info` (constants: the final job states, the metric names)
are open: they hold no data, and a browser cannot send a bearer token when it navigates.
Everything with data (the API, a job's gallery rows and its output files served here for the
gallery) stays behind API_KEY; the page sends the key it keeps in localStorage.

The page knows no server rule of its own: `/api-info` tells it which job states are final, and
`/jobs/{id}/gallery` rows carry the URLs of each image's sheet and cut-out, made here from the
names the pipeline stored (`file_url`, the inverse of `job_file`).
"""

from __future__ import annotations

import asyncio
import functools
import mimetypes
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response

from gateway.api.deps import (
    GW,
    After,
    CallerDep,
    Limit,
    Offset,
    ReadDB,
    StorageDep,
    TaskStateFilter,
    found_or_404,
    job_or_404,
)
from gateway.api.docs import BINARY, errors
from gateway.db import repo
from gateway.db.tables import Task
from gateway.results.report import FREE_KEYS, GT_KEYS
from shared.errors import ObjectMissing
from shared.responses import ApiInfo, GalleryPage, GalleryRow, MetricNames
from shared.states import FINAL_JOB_STATES, FINAL_TASK_STATES, JobState, TaskState
from shared.storage import (
    FINAL_RESULTS,
    MATTING_OUTPUT,
    PathNotAllowed,
    PathOutsideDataDir,
    Storage,
)

__all__ = ["STATIC", "WEB_DIR", "api_info", "file_url", "gallery_row", "job_file", "router"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC = {"app.js": "text/javascript", "gallery.js": "text/javascript",
          "style.css": "text/css"}
"""The only names `/static/` serves: nothing else in the folder can be reached."""
JOB_FOLDERS = (FINAL_RESULTS, MATTING_OUTPUT)
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["web"])


def job_file(storage: Storage, job_id: str, path: str) -> Path | str:
    """`final_results/a/b_compare.jpg` of job J → DATA_DIR/final_results/J/a/b_compare.jpg
    (the zip's names), or on S3 its object key `final_results/J/a/b_compare.jpg`; anything
    outside the job's two output folders is a 404 (blocking: it stats the file or object)."""
    top, _, rest = path.partition("/")
    if top not in JOB_FOLDERS or not rest:
        raise HTTPException(404, detail=f"not an output file of a job: {path!r}; "
                            f"use {FINAL_RESULTS}/… or {MATTING_OUTPUT}/…")
    key = f"{top}/{job_id}/{rest}"
    try:
        found = storage.job_target(key, top, job_id)
    except (PathOutsideDataDir, PathNotAllowed) as exc:
        raise HTTPException(404, detail=str(exc)) from None
    present = (found.is_file() if isinstance(found, Path)
               else storage.objects.size(found) is not None)
    if not present:
        raise HTTPException(404, detail=f"job {job_id!r} has no file {path!r}")
    return found


def file_url(job_id: str, stored: str | None) -> str | None:
    """A task's stored output (`final_results/J/a/b_compare.jpg`, DATA_DIR-relative) → the URL
    `job_file` serves it at (`/jobs/J/files/final_results/a/b_compare.jpg`); None for none."""
    if not stored:
        return None
    top, _, rest = stored.partition("/")
    owner, _, inner = rest.partition("/")
    if top not in JOB_FOLDERS or owner != job_id or not inner:
        return None
    return f"/jobs/{quote(job_id, safe='')}/files/{quote(f'{top}/{inner}')}"


def gallery_row(job_id: str, t: Task) -> GalleryRow:
    """What the page's gallery shows of a task, its images as ready URLs."""
    return GalleryRow(
        id=t.id,
        path=t.path,
        state=t.state,
        error=t.error,
        metrics=t.metrics,
        sheet=file_url(job_id, t.compare_output),
        cutout=file_url(job_id, t.matting_output),
        confidence=t.confidence,
    )


def api_info() -> ApiInfo:
    """The constants the page would otherwise repeat (public: no data in them)."""
    return ApiInfo(
        final_job_states=[s.value for s in JobState if s in FINAL_JOB_STATES],
        final_task_states=[s.value for s in TaskState if s in FINAL_TASK_STATES],
        metrics=MetricNames(ground_truth=list(GT_KEYS), free=list(FREE_KEYS)),
    )


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=NO_CACHE)


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    media = STATIC.get(name)
    if media is None:
        raise HTTPException(404, detail=f"no static file {name!r}")
    return FileResponse(WEB_DIR / name, media_type=media, headers=NO_CACHE)


@router.get("/api-info", response_model=ApiInfo)
async def info() -> ApiInfo:
    """Constants for clients such as the web page: which job states are final (a job in one
    of them changes no more), the final task states, and the metric names."""
    return api_info()


@router.get("/jobs/{job_id}/gallery",
            response_model=GalleryPage, responses=errors(400, 401, 404))
async def job_gallery(
    job_id: str,
    gw: GW,
    caller: CallerDep,
    state: TaskStateFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
    after: After = None,
) -> GalleryPage:
    """One page of a job's images for the web page's gallery (by task id): path, state,
    error, metrics, and the URLs of the comparison sheet and cut-out (null until made).
    `after` (a page's `next_after`) pages in constant time at any depth."""
    job, rows, total = await gw.db.snapshot(functools.partial(  # as `/jobs/{id}/tasks`
        repo.task_page_sync, job_id=job_id, owner=caller.owner, state=state, limit=limit,
        offset=offset, after=after))
    found_or_404(job, job_id)
    return GalleryPage(job_id=job_id, total=total,
                       tasks=[gallery_row(job_id, t) for t in rows],
                       next_after=rows[-1].id if len(rows) == limit else None)


@router.get("/jobs/{job_id}/files/{path:path}",
            response_class=FileResponse,
            responses={200: {"description": "the file",
                             "content": {"image/jpeg": {"schema": BINARY},
                                         "image/png": {"schema": BINARY}}},
                       **errors(401, 404)})
async def job_output(
    job_id: str, path: str, storage: StorageDep, db: ReadDB, caller: CallerDep
) -> Response:
    """One output file of a job by its name in the zip: a comparison sheet
    (`final_results/<path>_compare.jpg`) or a cut-out (`matting_output/<path>.png`)."""
    await job_or_404(db, job_id, caller)
    found = await asyncio.to_thread(job_file, storage, job_id, path)
    media = mimetypes.guess_type(path)[0] or "application/octet-stream"
    headers = {"Cache-Control": "private, max-age=300"}
    if isinstance(found, Path):
        return FileResponse(found, media_type=media, headers=headers)
    try:  # S3: the gateway fetches it (no store credentials or endpoint reach the browser)
        data = await asyncio.to_thread(storage.objects.get, found)
    except ObjectMissing:
        raise HTTPException(404, detail=f"job {job_id!r} has no file {path!r}") from None
    return Response(data, media_type=media, headers=headers)
