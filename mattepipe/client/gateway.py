"""A small synchronous client of the gateway's public API, for the CLI and scripts.

Uploads and downloads stream in chunks (archives may be 100 GB), report progress through a
callback, and every non-2xx answer becomes a `GatewayError` carrying the server's `detail`.
JSON answers are parsed into the gateway's own models (`shared.responses`). Resumable (tus)
uploads go through `tus()`; `mattepipe.client.upload` drives them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from mattepipe.client.errors import GatewayError, error_detail
from mattepipe.client.sse import parse_events
from mattepipe.client.tus import UPLOAD_CHUNK, TusClient
from shared.responses import (
    JobLinks,
    JobList,
    JobStatus,
    JobSummary,
    ModelList,
    PublicModel,
    TaskPage,
)
from shared.states import FINAL_JOB_STATES
from shared.timing import (
    EVENTS_HEARTBEAT_S,
    UPLOAD_RETRIES,
    UPLOAD_RETRY_BASE_S,
    UPLOAD_RETRY_MAX_S,
)

__all__ = ["CHUNK", "DOWNLOAD_RETRIES", "GatewayClient", "GatewayError", "ProgressCb",
           "content_type_for"]

CHUNK = 1024 * 1024
ProgressCb = Callable[[int, int | None], None]
"""Called with (done, total); total is None when unknown (a chunked download)."""

DOWNLOAD_RETRIES = UPLOAD_RETRIES
"""Times a cut download of a stored zip is resumed before it is an error (waits as an
upload's: UPLOAD_RETRY_BASE_S doubling, at most UPLOAD_RETRY_MAX_S)."""
EVENTS_READ_TIMEOUT_S = 4 * EVENTS_HEARTBEAT_S
"""A live progress stream that sends nothing, not even its heartbeat, for this long is dead."""

_TYPES = {".zip": "application/zip", ".tar": "application/x-tar", ".tgz": "application/gzip",
          ".gz": "application/gzip", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
          ".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp", ".tif": "image/tiff",
          ".tiff": "image/tiff", ".heic": "image/heic", ".heif": "image/heif",
          ".hif": "image/heif", ".avif": "image/avif"}


M = TypeVar("M", bound=PublicModel)


def _set(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The output options that are set (None means the server's default)."""
    return {k: v for k, v in (options or {}).items() if v is not None}


def _parse(model: type[M], resp: httpx.Response) -> M:
    """The answer as `model`; an answer of another shape is the gateway's error."""
    try:
        return model.model_validate(resp.json())
    except ValueError as exc:  # not JSON, or a pydantic ValidationError
        raise GatewayError(resp.status_code, f"unexpected answer from {resp.request.url.path} "
                           f"(not a {model.__name__}): {exc}") from exc


def _resumes_at(resp: httpx.Response, offset: int) -> bool:
    """A 206's `Content-Range` starts at `offset` (what was already written)."""
    got: str = resp.headers.get("Content-Range", "")
    return got.startswith(f"bytes {offset}-")


def content_type_for(path: Path) -> str:
    return _TYPES.get(path.suffix.lower(), "application/octet-stream")


class GatewayClient:
    """`GatewayClient("http://127.0.0.1:8000", api_key=None)`; use as a context manager."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, transport=transport,
                                  timeout=httpx.Timeout(timeout, connect=10.0))

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.is_error:
            if resp.is_stream_consumed is False:
                resp.read()
            raise GatewayError(resp.status_code, error_detail(resp))
        return resp

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            return self._check(self._http.request(method, url, **kw))
        except httpx.TransportError as exc:
            raise GatewayError(0, f"cannot reach the gateway at {self.base_url}: {exc}") from exc

    def health(self) -> bool:
        try:
            return self._http.get("/health", timeout=3.0).status_code == 200
        except httpx.HTTPError:
            return False

    def upload_file(self, path: Path | str, model: str | None = None, output: str = "rgba",
                    progress_cb: ProgressCb | None = None,
                    callback_url: str | None = None,
                    finishing: Mapping[str, Any] | None = None) -> JobLinks:
        """Stream one file as the raw request body; answers the gateway's 202 body."""
        path = Path(path)
        with path.open("rb") as f:
            return self.upload_stream(iter(lambda: f.read(CHUNK), b""),
                                      path.stat().st_size, path.name,
                                      content_type_for(path), model, output, progress_cb,
                                      callback_url, finishing)

    def upload_stream(self, blocks: Iterable[bytes], size: int, filename: str,
                      content_type: str = "application/octet-stream",
                      model: str | None = None, output: str = "rgba",
                      progress_cb: ProgressCb | None = None,
                      callback_url: str | None = None,
                      finishing: Mapping[str, Any] | None = None) -> JobLinks:
        """`size` bytes from `blocks` as one `POST /upload` (not resumable: for a gateway
        without tus); answers the gateway's 202 body. `finishing`: the output options
        (`format`, `max_size`, `background`, `crop`; None values are left out)."""
        params: dict[str, Any] = {"filename": filename, "output": output}
        if model:
            params["model"] = model
        if callback_url:
            params["callback_url"] = callback_url
        params.update(_set(finishing))

        def counted() -> Iterator[bytes]:
            sent = 0
            for block in blocks:
                sent += len(block)
                yield block
                if progress_cb:
                    progress_cb(sent, size)

        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        resp = self._request("POST", "/upload", params=params, headers=headers,
                             content=counted(), timeout=httpx.Timeout(None, connect=10.0))
        return _parse(JobLinks, resp)

    def tus(self, chunk: int = UPLOAD_CHUNK) -> TusClient:
        """A tus client on this connection (same base URL and API key)."""
        return TusClient(self._http, chunk=chunk)

    def create_job(self, upload_id: str, model: str | None = None, output: str = "rgba",
                   callback_url: str | None = None,
                   finishing: Mapping[str, Any] | None = None) -> JobLinks:
        """Turn a finished tus upload into a job; answers the 202 body like `/upload`."""
        payload: dict[str, Any] = {"upload_id": upload_id, "output": output}
        if model:
            payload["model"] = model
        if callback_url:
            payload["callback_url"] = callback_url
        payload.update(_set(finishing))
        return _parse(JobLinks, self._request("POST", "/jobs", json=payload))

    def jobs(self, limit: int = 50, offset: int = 0) -> JobList:
        resp = self._request("GET", "/jobs", params={"limit": limit, "offset": offset})
        return _parse(JobList, resp)

    def cancel(self, job_id: str) -> JobSummary:
        """`DELETE /jobs/{id}`: stop the job and remove its files; answers its last status."""
        return _parse(JobSummary, self._request("DELETE", f"/jobs/{job_id}"))

    def status(self, job_id: str) -> JobStatus:
        return _parse(JobStatus, self._request("GET", f"/status/{job_id}"))

    def tasks(self, job_id: str, state: str | None = None, limit: int = 100,
              offset: int = 0) -> TaskPage:
        """One page of a job's tasks, optionally only those in `state`."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state is not None:
            params["state"] = state
        resp = self._request("GET", f"/jobs/{job_id}/tasks", params=params)
        return _parse(TaskPage, resp)

    def models(self) -> ModelList:
        """The engines a job may name in `model=`, and the default."""
        return _parse(ModelList, self._request("GET", "/models"))

    def events(self, job_id: str, deadline: float | None = None) -> Iterator[JobStatus]:
        """The job's live progress (`GET /jobs/{id}/events`): each status the gateway sends,
        the last one final. A refusal (an old gateway's 404, a full gateway's 429, ...), a
        broken or ended stream raise `GatewayError`; passing `deadline` (monotonic) raises
        `TimeoutError` once it is over (checked at each event and heartbeat)."""
        try:
            with self._http.stream(
                "GET", f"/jobs/{job_id}/events", headers={"Accept": "text/event-stream"},
                timeout=httpx.Timeout(EVENTS_READ_TIMEOUT_S, connect=10.0),
            ) as resp:
                self._check(resp)
                if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                    raise GatewayError(resp.status_code, "the gateway sent no event stream")
                for event in parse_events(resp.iter_lines()):
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"job {job_id} not over by the deadline")
                    if event.name not in ("status", "end"):
                        continue
                    try:
                        st = JobStatus.model_validate_json(event.data)
                    except ValueError as exc:
                        raise GatewayError(resp.status_code,
                                           f"unexpected event from the gateway: {exc}") from exc
                    yield st
                    if event.name == "end":
                        return
        except httpx.TransportError as exc:
            raise GatewayError(0, f"the event stream of {job_id} broke off: {exc}") from exc
        raise GatewayError(0, f"the event stream of {job_id} ended before the job did")

    def wait(self, job_id: str, progress_cb: Callable[[JobStatus], None] | None = None,
             poll_s: float = 0.5, timeout: float | None = None,
             use_events: bool = True) -> JobStatus:
        """Follow the job until it is in a final state; answers the last status. Its live
        event stream first (reopened after a break as long as each try delivers something);
        when the gateway has none or refuses one, polling /status every `poll_s`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if use_events:
            final = self._wait_events(job_id, progress_cb, deadline)
            if final is not None:
                return final
        while True:
            st = self.status(job_id)
            if progress_cb:
                progress_cb(st)
            if st.state in FINAL_JOB_STATES:
                return st
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {st.state} after {timeout}s")
            time.sleep(poll_s)

    def _wait_events(self, job_id: str, progress_cb: Callable[[JobStatus], None] | None,
                     deadline: float | None) -> JobStatus | None:
        """The final status as the event stream told it; None when the stream is not to be
        had (the caller polls instead, which also reports any real error as before)."""
        while True:
            delivered = False
            try:
                for st in self.events(job_id, deadline):
                    delivered = True
                    if progress_cb:
                        progress_cb(st)
                    if st.state in FINAL_JOB_STATES:
                        return st
            except GatewayError:
                pass
            if not delivered:
                return None

    def download(self, job_id: str, dest: Path | str, progress_cb: ProgressCb | None = None,
                 partial: bool = False, retries: int = DOWNLOAD_RETRIES) -> Path:
        """Stream the result zip to `dest` (a temporary name first, so `dest` is never half).

        A finished job's stored zip answers ranges (`Accept-Ranges: bytes`, an `ETag`): a
        download cut on the way is resumed where it stopped, up to `retries` times, with
        `If-Range` so that it never joins the pieces of two different files (a 200 instead
        of the 206 starts the file again). A zip made as it is sent cannot be resumed: a cut
        is an error, as before."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        params = {"partial": "1"} if partial else {}
        done, total, etag, failures = 0, None, None, 0
        try:
            with tmp.open("wb") as f:
                while True:
                    headers: dict[str, str] = {}
                    if done and etag:
                        headers = {"Range": f"bytes={done}-", "If-Range": etag}
                    try:
                        with self._http.stream("GET", f"/download/{job_id}", params=params,
                                               headers=headers,
                                               timeout=httpx.Timeout(None, connect=10.0)) as resp:
                            self._check(resp)
                            if resp.status_code == 206 and not _resumes_at(resp, done):
                                raise GatewayError(206, "the gateway answered another range: "
                                                   + resp.headers.get("Content-Range", ""))
                            if resp.status_code != 206:  # the whole file, from its start
                                f.seek(0)
                                f.truncate()
                                done = 0
                                length = resp.headers.get("Content-Length")
                                total = int(length) if length and length.isdigit() else None
                                ranges = resp.headers.get("Accept-Ranges") == "bytes"
                                etag = resp.headers.get("ETag") if ranges else None
                            for block in resp.iter_bytes(CHUNK):
                                f.write(block)
                                done += len(block)
                                if progress_cb:
                                    progress_cb(done, total)
                        break
                    except httpx.TransportError as exc:
                        failures += 1
                        if etag is None or failures > retries:
                            raise GatewayError(0, f"download of {job_id} broke off: {exc}"
                                               ) from exc
                        time.sleep(min(UPLOAD_RETRY_MAX_S,
                                       UPLOAD_RETRY_BASE_S * 2 ** (failures - 1)))
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest
