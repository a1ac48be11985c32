"""A model mirror on 127.0.0.1 for download tests: serves files with HTTP Range, and can cut a
connection halfway or go slowly, so resumption and concurrent fetches meet real sockets.

It is a bare ASGI app run by `ThreadServer` (uvicorn); an exception after the first body
chunk makes uvicorn drop the connection, which is what a cut download looks like to a client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.servers import ThreadServer

__all__ = ["ModelMirror", "serving_models", "zoo_file"]

_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class ModelMirror:
    files: dict[str, bytes]
    cut_after: int | None = None
    """Drop the connection after this many body bytes (the first `cuts` responses)."""
    cuts: int = 1
    chunk: int = 64 * 1024
    delay_s: float = 0.0
    """Pause between chunks (keeps a download open while other processes race for it)."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    """(path, Range header or '') per GET, in order."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def full_gets(self, name: str) -> int:
        return sum(1 for p, r in self.requests if p == f"/{name}" and not r)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        rng = headers.get("range", "")
        with self._lock:
            self.requests.append((path, rng))
            cut = self.cut_after if self.cuts > 0 else None
            if cut is not None:
                self.cuts -= 1
        data = self.files.get(path.lstrip("/"))
        if data is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not here"})
            return
        status, start = 200, 0
        out: list[tuple[bytes, bytes]] = []
        m = _RANGE.match(rng)
        if m:
            start = int(m.group(1))
            if start >= len(data):
                await send({"type": "http.response.start", "status": 416,
                            "headers": [(b"content-range", f"bytes */{len(data)}".encode())]})
                await send({"type": "http.response.body", "body": b""})
                return
            status = 206
            out.append((b"content-range",
                        f"bytes {start}-{len(data) - 1}/{len(data)}".encode()))
        body = data[start:]
        out.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        sent = 0
        while sent < len(body):
            piece = body[sent:sent + self.chunk]
            if cut is not None and sent + len(piece) > cut:
                piece = piece[:max(0, cut - sent)]
                if piece:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                raise ConnectionAbortedError("the mirror cuts this download here (test)")
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece,
                        "more_body": sent < len(body)})
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        if not body:
            await send({"type": "http.response.body", "body": b""})


def zoo_file(path: Path, base_url: str, files: dict[str, bytes],
             hashes: dict[str, str] | None = None) -> Path:
    """A catalogue (MODEL_CATALOGUE) naming each served file as the model `<stem>`, with its
    real sha256 unless `hashes` gives another."""
    models = []
    for name, data in files.items():
        stem = name.rsplit(".", 1)[0]
        models.append({
            "name": stem, "file": name, "url": f"{base_url}/{name}",
            "hash": (hashes or {}).get(name, "sha256:" + hashlib.sha256(data).hexdigest()),
            "description": "a test model", "licence": "test",
        })
    path.write_text(json.dumps({"about": "test catalogue", "models": models}))
    return path


@contextmanager
def serving_models(mirror: ModelMirror) -> Iterator[str]:
    """The mirror on a free port; yields its base URL."""
    with ThreadServer(mirror) as server:
        yield f"http://127.0.0.1:{server.port}"
