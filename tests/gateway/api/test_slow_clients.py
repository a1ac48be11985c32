"""Slow clients and the disk (docs/guarantees.md, "Threat model", "Slow clients and disk"), against
the real gateway under uvicorn with SQLite: raw sockets that stall or trickle an upload body,
per-key limits on open tus uploads, and the tus hard deadline a PATCH cannot extend.

The timeouts are tiny in the test's settings; no assertion depends on how long anything took,
only on what the server answered and what is left on disk and in the database."""

from __future__ import annotations

import contextlib
import io
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from PIL import Image

from tests.gateway.api.test_tus import PATCH, TUS, create, head_offset
from tests.support.gateway import Gateway, sweep_expired_uploads

Start = Callable[..., Gateway]
SLOW = {"upload_idle_timeout_s": 0.5, "min_upload_rate": 0}
"""Settings that cut a body after half a second without a byte."""


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def connect(gw: Gateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])))
    sock.settimeout(60)
    return sock


def read_answer(sock: socket.socket) -> str:
    """Everything the server sends until it closes the connection (it must: the body it cut
    was never complete)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data.decode("latin-1")


def count(gw: Gateway, table: str) -> int:
    db = sqlite3.connect(gw.settings.data_dir / "mattepipe.db")
    try:
        n: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return n
    finally:
        db.close()


def stalled_upload(gw: Gateway) -> str:
    """POST /upload announcing 100 kB, sending 10 bytes, then nothing (the socket stays open)."""
    with connect(gw) as sock:
        sock.sendall(b"POST /upload?filename=a.png HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n" + png()[:10])
        return read_answer(sock)


def test_stalled_upload_is_cut_and_frees_its_slot_and_its_file(start_gateway: Start) -> None:
    gw = start_gateway(max_concurrent_jobs=1, **SLOW)
    answer = stalled_upload(gw)
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "no body bytes" in answer and '"detail"' in answer
    assert count(gw, "jobs") == 0
    assert not any(p.is_file() for p in (gw.settings.data_dir / "input").rglob("*"))
    # The one slot of MAX_CONCURRENT_JOBS=1 is free again: a real upload gets it.
    r = gw.client.post("/upload", content=png(), headers={"Content-Type": "image/png"})
    assert r.status_code == 202, r.text


def test_trickle_below_the_minimum_rate_is_cut(start_gateway: Start) -> None:
    gw = start_gateway(max_concurrent_jobs=1, upload_idle_timeout_s=60.0,
                       min_upload_rate=100_000, upload_rate_grace_s=0.2)
    with connect(gw) as sock:
        sock.sendall(b"POST /upload?filename=a.png HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
        stop = threading.Event()

        def trickle() -> None:  # a byte every 50 ms: far below 100 kB/s, never idle
            with contextlib.suppress(OSError):
                while not stop.wait(0.05):
                    sock.sendall(b"x")

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        try:
            answer = read_answer(sock)
        finally:
            stop.set()
            t.join(10)
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "too slow" in answer
    assert count(gw, "jobs") == 0
    r = gw.client.post("/upload", content=png(), headers={"Content-Type": "image/png"})
    assert r.status_code == 202, r.text


def test_stalled_tus_patch_ends_with_408_and_keeps_what_arrived(start_gateway: Start) -> None:
    gw = start_gateway(**SLOW)
    upload_id = create(gw, 100, filename="a.png")
    with connect(gw) as sock:
        sock.sendall((f"PATCH /files/{upload_id} HTTP/1.1\r\nHost: x\r\n"
                      "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
                      "Upload-Offset: 0\r\nContent-Length: 100\r\n\r\n").encode() + b"0123456789")
        answer = read_answer(sock)
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "tus-resumable: 1.0.0" in answer.lower() and "HEAD tells where to resume" in answer
    assert head_offset(gw, upload_id) == 10
    assert gw.storage.upload_path(upload_id).read_bytes() == b"0123456789"
    r = gw.client.patch(f"/files/{upload_id}", headers={**PATCH, "Upload-Offset": "10"},
                        content=b"x" * 90)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "100"


def test_open_tus_uploads_are_limited_per_key_in_number(start_gateway: Start) -> None:
    gw = start_gateway(max_open_uploads=2)
    first = create(gw, 10, filename="a.png")
    create(gw, 10, filename="b.png")
    r = gw.client.post("/files/", headers={**TUS, "Upload-Length": "10"})
    assert r.status_code == 429, r.text
    assert "too many open uploads" in r.json()["detail"]
    assert r.headers["Tus-Resumable"] == "1.0.0" and int(r.headers["Retry-After"]) >= 1
    assert count(gw, "uploads") == 2
    assert len(list(gw.storage.upload_path(first).parent.iterdir())) == 2  # no stray file
    assert gw.client.delete(f"/files/{first}", headers=TUS).status_code == 204
    create(gw, 10, filename="c.png")


def test_open_tus_uploads_are_limited_per_key_in_declared_bytes(start_gateway: Start) -> None:
    gw = start_gateway(max_open_upload_bytes=100)
    create(gw, 60, filename="a.png")
    r = gw.client.post("/files/", headers={**TUS, "Upload-Length": "50"})
    assert r.status_code == 413, r.text
    assert "100 allowed per key" in r.json()["detail"]
    assert r.headers["Tus-Resumable"] == "1.0.0"
    create(gw, 40, filename="b.png")
    assert count(gw, "uploads") == 2


def test_patch_cannot_extend_an_upload_past_its_hard_deadline(start_gateway: Start) -> None:
    lifetime = 1000.0
    gw = start_gateway(tus_max_lifetime_s=lifetime)
    old, near = create(gw, 10, filename="a.png"), create(gw, 10, filename="b.png")
    now = time.time()
    db = sqlite3.connect(gw.settings.data_dir / "mattepipe.db")
    with db:
        # Both still have a day of expiry left, as a trickling client keeps them; `old` was
        # created longer ago than the lifetime, `near` 100 s before its deadline.
        db.execute("UPDATE uploads SET created_at = ?, expires_at = ? WHERE id = ?",
                   (now - lifetime - 1, now + 86400, old))
        db.execute("UPDATE uploads SET created_at = ?, expires_at = ? WHERE id = ?",
                   (now - lifetime + 100, now + 86400, near))
    db.close()
    r = gw.client.patch(f"/files/{old}", headers={**PATCH, "Upload-Offset": "0"}, content=b"a")
    assert r.status_code == 404, r.text
    r = gw.client.patch(f"/files/{near}", headers={**PATCH, "Upload-Offset": "0"}, content=b"a")
    assert r.status_code == 204, r.text
    expires = parsedate_to_datetime(r.headers["Upload-Expires"]).timestamp()
    assert expires <= now + 100 + 1  # created_at + lifetime, not a day from now

    assert sweep_expired_uploads(gw.settings) == 1
    assert not gw.storage.upload_path(old).exists()
    assert gw.storage.upload_path(near).exists() and head_offset(gw, near) == 1
