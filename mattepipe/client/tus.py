"""A small tus 1.0 client over httpx: create, ask the offset, send the rest in checked chunks.

Each PATCH carries one chunk (UPLOAD_CHUNK, 8 MiB) with `Upload-Checksum: sha1`, so a chunk
damaged on the way is refused by the server instead of silently stored. A network error, a
5xx, an offset conflict (409) or a checksum mismatch (460) is retried with backoff after
asking the server (HEAD) where it stands, so a flaky link costs at most one chunk per hiccup;
`TusError` ends the upload for anything else, with the server's detail.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from mattepipe.client.errors import TusError, TusUnsupported, error_detail
from shared.timing import UPLOAD_RETRIES, UPLOAD_RETRY_BASE_S, UPLOAD_RETRY_MAX_S

__all__ = ["TUS_HEADERS", "UPLOAD_CHUNK", "SourceChanged", "TusClient", "TusError",
           "TusUnsupported", "UploadStopped", "encode_metadata", "rechunk"]

UPLOAD_CHUNK = 8 * 1024 * 1024
TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
_RETRY_STATUS = frozenset({409, 460, 423})
_GONE = frozenset({403, 404, 410})


class SourceChanged(RuntimeError):
    """The local file or folder gave fewer bytes than announced: it changed while sending."""


class UploadStopped(Exception):
    """The upload was stopped on purpose after `stop_after` bytes (testing resumption)."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"upload stopped at byte {offset}")
        self.offset = offset


def encode_metadata(meta: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())


Opener = Callable[[int], Iterator[bytes]]
"""Gives the source's bytes from an offset to the end."""


class TusClient:
    """tus over an existing `httpx.Client` (its base URL, auth headers and timeouts)."""

    def __init__(self, http: httpx.Client, endpoint: str = "/files/",
                 chunk: int = UPLOAD_CHUNK, retries: int = UPLOAD_RETRIES,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._http = http
        self.endpoint = endpoint
        self.chunk = chunk
        self.retries = retries
        self._sleep = sleep

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {**TUS_HEADERS, **kw.pop("headers", {})}
        try:
            return self._http.request(method, url, headers=headers, **kw)
        except httpx.TransportError as exc:
            raise TusError(0, f"cannot reach {self._http.base_url}: {exc}") from exc

    def create(self, length: int, metadata: dict[str, str]) -> str:
        """A new upload of `length` bytes; answers its absolute URL."""
        resp = self._send("POST", self.endpoint, headers={
            "Upload-Length": str(length), "Upload-Metadata": encode_metadata(metadata)})
        if resp.status_code in (404, 405):
            raise TusUnsupported(resp.status_code, "the server has no tus endpoint at "
                                 f"{self.endpoint}")
        if resp.status_code != 201 or "Location" not in resp.headers:
            raise TusError(resp.status_code, error_detail(resp))
        return str(self._http.base_url.join(resp.headers["Location"]))

    def offset(self, url: str) -> int | None:
        """How many bytes the server holds; None when it no longer knows the upload."""
        resp = self._send("HEAD", url, headers={"Cache-Control": "no-store"})
        if resp.status_code in _GONE:
            return None
        if resp.is_error or "Upload-Offset" not in resp.headers:
            raise TusError(resp.status_code, error_detail(resp) if resp.content else
                           f"HEAD {url} answered without Upload-Offset")
        return int(resp.headers["Upload-Offset"])

    def _patch(self, url: str, offset: int, data: bytes) -> httpx.Response:
        digest = base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode()

        def body() -> Iterator[bytes]:
            # A one-shot stream rather than `content=data`: httpx's response and request form
            # a reference cycle, so a body held by the request would outlive the call until
            # the garbage collector runs, about ten chunks later.
            yield data

        return self._send("PATCH", url, content=body(), headers={
            "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(len(data)), "Upload-Checksum": f"sha1 {digest}"})

    def upload(self, url: str, open_at: Opener, offset: int, length: int,
               progress: Callable[[int], None] | None = None,
               stop_after: int | None = None) -> int:
        """Send bytes `offset`..`length` of the source; answers the bytes sent in this call.
        `stop_after` (testing) raises UploadStopped once that many bytes went out."""
        sent = 0
        failures = 0
        blocks = rechunk(open_at(offset), self.chunk)
        pending: bytes | None = None
        while offset < length:
            if stop_after is not None and sent >= stop_after:
                raise UploadStopped(offset)
            if pending is None:
                pending = next(blocks, b"")
                if not pending:
                    raise SourceChanged(f"the source ended at byte {offset} of {length}; "
                                        "did it change during the upload?")
            try:
                resp = self._patch(url, offset, pending)
                status: int = resp.status_code
            except TusError as exc:
                status, resp = 0, None
                reason = exc.detail
            if resp is not None and status in (200, 204):
                new = int(resp.headers.get("Upload-Offset", offset + len(pending)))
                sent += new - offset
                offset, pending, failures = new, None, 0
                if progress:
                    progress(offset)
                continue
            if resp is not None:
                reason = error_detail(resp)
                if status in _GONE:
                    raise TusError(status, f"the server no longer knows this upload: {reason}")
                if status not in _RETRY_STATUS and status < 500:
                    raise TusError(status, reason)
            failures += 1
            if failures > self.retries:
                raise TusError(status, f"upload failed {failures} times in a row; last: "
                               f"{reason}")
            self._sleep(min(UPLOAD_RETRY_MAX_S, UPLOAD_RETRY_BASE_S * 2 ** (failures - 1)))
            try:
                at = self.offset(url)
            except TusError:
                continue  # still unreachable: try the same chunk again after the next pause
            if at is None:
                raise TusError(404, "the server no longer knows this upload")
            if at != offset:  # it stored part of a chunk, or more than we knew: go from there
                if offset < at <= offset + len(pending or b""):
                    pending = (pending or b"")[at - offset:] or None
                else:
                    blocks, pending = rechunk(open_at(at), self.chunk), None
                sent += max(0, at - offset)
                offset = at
                if progress:
                    progress(offset)
        return sent



def rechunk(blocks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Blocks of exactly `size` bytes (the last one shorter), whatever sizes come in. Each is
    one join of views of the incoming blocks, so only the block being built is held."""
    parts: list[memoryview] = []
    have = 0
    for block in blocks:
        view = memoryview(block)
        while len(view):
            take = size - have
            if len(view) < take:
                parts.append(view)
                have += len(view)
                break
            parts.append(view[:take])
            view = view[take:]
            yield b"".join(parts)
            parts, have = [], 0
    if have:
        yield b"".join(parts)
