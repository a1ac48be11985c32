"""The web page at `/`: upload, live job list, per-job gallery (files in `gateway/web/`).

The page and its two static files are open: they hold no data, and a browser cannot send a
bearer token when it navigates. Everything with data (the API, and a job's output files served
here for the gallery) stays behind API_KEY; the page sends the key it keeps in localStorage.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from gateway.api.auth import require_api_key
from gateway.api.deps import StorageDep
from gateway.api.docs import BINARY, errors
from shared.storage import FINAL_RESULTS, MATTING_OUTPUT, PathOutsideDataDir, Storage

__all__ = ["STATIC", "WEB_DIR", "job_file", "router"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
"""The only names `/static/` serves: nothing else in the folder can be reached."""
JOB_FOLDERS = (FINAL_RESULTS, MATTING_OUTPUT)
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["web"])


def job_file(storage: Storage, job_id: str, path: str) -> Path:
    """`final_results/a/b_compare.jpg` of job J → DATA_DIR/final_results/J/a/b_compare.jpg
    (the zip's names); anything outside the job's two output folders is a 404."""
    top, _, rest = path.partition("/")
    if top not in JOB_FOLDERS or not rest:
        raise HTTPException(404, detail=f"not an output file of a job: {path!r}; "
                            f"use {FINAL_RESULTS}/… or {MATTING_OUTPUT}/…")
    try:
        folder = storage.resolve(f"{top}/{job_id}")
        full = storage.resolve(f"{top}/{job_id}/{rest}")
    except PathOutsideDataDir as exc:
        raise HTTPException(404, detail=str(exc)) from None
    if folder not in full.parents or not full.is_file():
        raise HTTPException(404, detail=f"job {job_id!r} has no file {path!r}")
    return full


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=NO_CACHE)


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    media = STATIC.get(name)
    if media is None:
        raise HTTPException(404, detail=f"no static file {name!r}")
    return FileResponse(WEB_DIR / name, media_type=media, headers=NO_CACHE)


@router.get("/jobs/{job_id}/files/{path:path}",
            dependencies=[Depends(require_api_key)],
            response_class=FileResponse,
            responses={200: {"description": "the file",
                             "content": {"image/jpeg": {"schema": BINARY},
                                         "image/png": {"schema": BINARY}}},
                       **errors(401, 404)})
async def job_output(job_id: str, path: str, storage: StorageDep) -> FileResponse:
    """One output file of a job by its name in the zip: a comparison sheet
    (`final_results/<path>_compare.jpg`) or a cut-out (`matting_output/<path>.png`)."""
    full = job_file(storage, job_id, path)
    media = mimetypes.guess_type(full.name)[0] or "application/octet-stream"
    return FileResponse(full, media_type=media, headers={"Cache-Control": "private, max-age=300"})
