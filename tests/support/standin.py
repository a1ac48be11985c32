"""A stand-in gateway for the CLI's tests: a real HTTP server (uvicorn in a thread) speaking
tus 1.0 under /files/ (with sha1 checksums) and the job endpoints of docs/DESIGN.md. Jobs finish
after a few polls in the state the test asks for; faults can be injected into PATCHes.
The real gateway is exercised by tests/integration/test_cli_roundtrip.py."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from tests.support.servers import ThreadServer


@dataclass
class StandIn:
    final_state: str = "completed"
    tus: bool = True
    api_key: str | None = None
    error: str | None = None
    faults: list[str] = field(default_factory=list)
    """Next PATCH behaviours: "500", "half" (store half, then 500), "checksum" (460)."""
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    patches: list[tuple[int, int]] = field(default_factory=list)
    """(offset, length) of every PATCH that arrived."""
    plain_bodies: list[bytes] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    """The options of every job-creating call: `POST /jobs` bodies, `POST /upload` queries."""
    paths: list[str] = field(default_factory=list)
    """The path of every request, in order (it has no /jobs/{id}/events: an older gateway)."""
    status_outages: int = 0
    """How many /status calls answer 503 first (a gateway restarting)."""
    url: str = ""


def _job(st: StandIn, data: bytes, model: str | None, output: str) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile:
        names = ["single"]
    if model == "nope":
        raise HTTPException(400, detail="unknown model 'nope'; available: classical")
    job_id = uuid.uuid4().hex[:12]
    st.jobs[job_id] = {"names": names, "polls": 0, "model": model or "classical",
                       "output": output, "data": data, "state": None}
    return {"job_id": job_id, "status_url": f"/status/{job_id}",
            "download_url": f"/download/{job_id}"}


def _summary(job_id: str, job: dict[str, Any], state: str) -> dict[str, Any]:
    n = len(job["names"])
    done = state != "running"
    rejected = 1 if state == "completed_with_errors" else 0
    completed = n - rejected if state.startswith("completed") else (0 if done else 1)
    return {"job_id": job_id, "state": state, "total": n, "completed": completed,
            "failed": 0, "rejected": rejected, "retrying": 0,
            "progress": 100.0 if done else 100.0 / max(n, 1), "throughput_per_s": 2.5,
            "eta_s": 0.0 if done else 3.0, "counts": {"completed": completed},
            "created_at": 1.7e9, "model": job["model"], "output": job["output"],
            "filename": "x.zip", "error": job.get("error")}


def build_app(st: StandIn) -> FastAPI:
    api = FastAPI()

    @api.middleware("http")
    async def auth(request: Request, call_next: Any) -> Any:
        st.paths.append(request.url.path)
        if st.api_key and request.url.path != "/health" and \
                request.headers.get("authorization") != f"Bearer {st.api_key}":
            return JSONResponse({"detail": "missing or wrong API key"}, status_code=401)
        if request.url.path.startswith("/files") and not st.tus:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return await call_next(request)

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/files/", status_code=201)
    def create(request: Request) -> Response:
        length = int(request.headers["upload-length"])
        meta = dict(kv.split(" ") for kv in request.headers["upload-metadata"].split(","))
        uid = uuid.uuid4().hex
        st.uploads[uid] = {"length": length, "data": bytearray(),
                           "filename": base64.b64decode(meta["filename"]).decode()}
        return Response(status_code=201, headers={"Location": f"/files/{uid}",
                                                  "Tus-Resumable": "1.0.0"})

    @api.head("/files/{uid}")
    def head(uid: str) -> Response:
        if uid not in st.uploads:
            return Response(status_code=404)
        up = st.uploads[uid]
        return Response(headers={"Upload-Offset": str(len(up["data"])),
                                 "Upload-Length": str(up["length"])})

    @api.patch("/files/{uid}")
    async def patch(uid: str, request: Request) -> Response:
        if uid not in st.uploads:
            raise HTTPException(404, detail="unknown upload")
        up = st.uploads[uid]
        offset = int(request.headers["upload-offset"])
        body = await request.body()
        st.patches.append((offset, len(body)))
        if offset != len(up["data"]):
            raise HTTPException(409, detail=f"offset is {len(up['data'])}, not {offset}")
        algo, digest = request.headers["upload-checksum"].split(" ")
        fault = st.faults.pop(0) if st.faults else None
        if algo != "sha1" or base64.b64decode(digest) != hashlib.sha1(body).digest() \
                or fault == "checksum":
            return JSONResponse({"detail": "checksum mismatch"}, status_code=460)
        if fault == "500":
            raise HTTPException(500, detail="disk hiccup")
        if fault == "half":
            up["data"] += body[: len(body) // 2]
            raise HTTPException(500, detail="connection lost half way")
        if len(up["data"]) + len(body) > up["length"]:
            raise HTTPException(400, detail="beyond Upload-Length")
        up["data"] += body
        return Response(status_code=204, headers={"Upload-Offset": str(len(up["data"]))})

    @api.post("/jobs", status_code=202)
    async def create_job(request: Request) -> dict[str, Any]:
        body = await request.json()
        st.requests.append(body)
        up = st.uploads.get(body["upload_id"])
        if up is None:
            raise HTTPException(404, detail="unknown upload")
        if len(up["data"]) != up["length"]:
            raise HTTPException(409, detail="upload is not finished")
        return _job(st, bytes(up["data"]), body.get("model"), body.get("output", "rgba"))

    @api.post("/upload", status_code=202)
    async def upload(request: Request, filename: str, model: str | None = None,
                     output: str = "rgba") -> dict[str, Any]:
        data = await request.body()
        st.plain_bodies.append(data)
        st.requests.append(dict(request.query_params))
        return _job(st, data, model, output)

    @api.get("/status/{job_id}")
    def status(job_id: str) -> dict[str, Any]:
        if st.status_outages > 0:
            st.status_outages -= 1
            raise HTTPException(503, detail="restarting")
        if job_id not in st.jobs:
            raise HTTPException(404, detail=f"unknown job {job_id}")
        job = st.jobs[job_id]
        job["polls"] += 1
        if job["state"] is None and job["polls"] >= 3:
            job["state"] = st.final_state
            job["error"] = st.error
        return _summary(job_id, job, job["state"] or "running")

    @api.get("/jobs")
    def jobs(limit: int = 50, offset: int = 0) -> dict[str, Any]:
        rows = [_summary(j, job, job["state"] or "running") for j, job in st.jobs.items()]
        return {"total": len(rows), "limit": limit, "offset": offset,
                "jobs": rows[offset: offset + limit]}

    @api.delete("/jobs/{job_id}")
    def cancel(job_id: str) -> dict[str, Any]:
        if job_id not in st.jobs:
            raise HTTPException(404, detail=f"unknown job {job_id}")
        st.jobs[job_id]["state"] = "cancelled"
        return _summary(job_id, st.jobs[job_id], "cancelled")

    @api.get("/download/{job_id}")
    def download(job_id: str, partial: bool = False) -> Response:
        job = st.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, detail=f"unknown job {job_id}")
        if job["state"] is None and not partial:
            raise HTTPException(409, detail="job is still running; use ?partial=1")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name in job["names"]:
                zf.writestr(f"matting_output/{name}.png", b"png")
            zf.writestr("report.json", "{}")
        return Response(buf.getvalue(), media_type="application/zip")

    return api


@contextmanager
def serve(st: StandIn) -> Iterator[StandIn]:
    with ThreadServer(build_app(st)) as server:
        st.url = server.url
        yield st
