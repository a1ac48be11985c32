"""A raw `POST /upload` body spliced from the socket (`gateway.intake.splice`, through
`shared.serve.BodyTap`): on a real uvicorn server running the services' own `HttpProtocol`,
with clients on real sockets — bodies arriving in pieces before and after the hand-over,
keep-alive and a pipelined request after a spliced body, `Expect: 100-continue`, a client
that goes away mid-body, a stalled one, and the limits on the new path. Multipart bodies
take the same socket to a thread that parses them there (`tap_body`): the same cases, and a
malformed form, a file over the limit and a second file part refused mid-body."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request

from gateway.api.errors import add_error_handlers, request_body
from gateway.intake.pacing import Pace
from gateway.intake.receive import receive_upload
from gateway.intake.tus_store import append_body
from shared.serve import BODY_TAP, HttpProtocol
from shared.settings import Settings
from tests.support.servers import ThreadServer
from tests.support.waiting import wait_for

SPLICES: list[tuple[int, int]] = []
"""(pieces handed over with the socket, bytes still to come) of each tap taken."""


class Recording:
    """The request's tap, noting what it handed over (the test's only look inside)."""

    def __init__(self, tap: object) -> None:
        self.tap = tap

    def take(self) -> tuple[list[bytes], int, int] | None:
        got = self.tap.take()  # type: ignore[attr-defined]
        if got is not None:
            SPLICES.append((sum(map(len, got[0])), got[2]))
        return got  # type: ignore[no-any-return]

    def release(self, complete: bool) -> None:
        self.tap.release(complete)  # type: ignore[attr-defined]


def make_app(root: Path, settings: Settings) -> FastAPI:
    app = FastAPI()
    add_error_handlers(app)

    @app.post("/upload/{job}")
    async def upload(job: str, request: Request, max_size: int = 1 << 30,
                     min_free: int = 0) -> dict[str, object]:
        tap = request.scope.get("extensions", {}).get(BODY_TAP)
        got = await receive_upload(request_body(request), request.headers, root / job,
                                   max_size, min_free, "a.zip",
                                   Recording(tap) if tap else None, Pace(settings))
        return {"size": got.size, "sha": hashlib.sha256(got.path.read_bytes()).hexdigest()}

    @app.patch("/tus/{name}")
    async def patch(name: str, request: Request, offset: int, length: int) -> dict[str, int]:
        tap = request.scope.get("extensions", {}).get(BODY_TAP)
        size = await append_body(request_body(request), root / name, offset, length, None, 0,
                                 Recording(tap) if tap else None, Pace(settings))
        return {"size": size}

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadServer, Path]]:
    root = tmp_path_factory.mktemp("spliced")
    settings = Settings(_env_file=None, data_dir=root, upload_idle_timeout_s=1.0,
                        min_upload_rate=0)
    with ThreadServer(make_app(root, settings), http=HttpProtocol) as srv:
        yield srv, root


def connect(srv: ThreadServer) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def head(job: str, length: int, extra: str = "") -> bytes:
    return (f"POST /upload/{job} HTTP/1.1\r\nHost: x\r\nContent-Type: application/zip\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def read_response(s: socket.socket, buf: bytearray) -> tuple[int, dict[str, object], bytes]:
    """One response off `s` (status, JSON body); `buf` keeps what came after it."""
    while b"\r\n\r\n" not in buf:
        got = s.recv(65536)
        if not got:
            raise ConnectionError(f"closed before a response: {bytes(buf)!r}")
        buf += got
    top, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in top.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        got = s.recv(65536)
        if not got:
            raise ConnectionError("closed mid-response")
        rest += got
    buf[:] = rest[length:]
    return int(top.split()[1]), json.loads(rest[:length]), top


def closed(s: socket.socket) -> bool:
    s.settimeout(10)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("first", [0, 1, 100, 65_536, 300_001])
def test_a_body_split_anywhere_before_the_hand_over_arrives_whole(
        server: tuple[ThreadServer, Path], first: int) -> None:
    """Part of the body sent with the headers (what the parser passed on before the tap is
    taken), the rest after a pause: the file is the body, byte for byte, and the splice
    moved the rest."""
    srv, _ = server
    body = os.urandom(3 * 1024 * 1024 + 7)
    SPLICES.clear()
    with connect(srv) as s:
        s.sendall(head(f"split{first}", len(body)) + body[:first])
        time.sleep(0.2)  # the app takes the tap while the rest is still to come
        s.sendall(body[first:])
        code, got, _ = read_response(s, bytearray())
    assert code == 200, got
    assert got == {"size": len(body), "sha": sha(body)}
    assert len(SPLICES) == 1
    before, rest = SPLICES[0]
    assert before + rest == len(body) and rest > 0


def test_keep_alive_and_a_pipelined_request_after_a_spliced_body(
        server: tuple[ThreadServer, Path]) -> None:
    """The parser starts afresh at the body's end: a second upload and a GET on the same
    connection, the GET pipelined in the same send as the second body's last bytes."""
    srv, _ = server
    one, two = os.urandom(2_000_000), os.urandom(1_500_000)
    SPLICES.clear()
    with connect(srv) as s:
        buf = bytearray()
        s.sendall(head("ka1", len(one)))
        time.sleep(0.1)
        s.sendall(one)
        code, got, _ = read_response(s, buf)
        assert code == 200 and got == {"size": len(one), "sha": sha(one)}
        s.sendall(head("ka2", len(two)) + two[:1000])
        time.sleep(0.2)
        s.sendall(two[1000:] + b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        code, got, _ = read_response(s, buf)
        assert code == 200 and got == {"size": len(two), "sha": sha(two)}
        code, got, _ = read_response(s, buf)
        assert code == 200 and got == {"hello": "world"}
    assert len(SPLICES) == 2


def test_expect_100_continue_is_answered_before_the_splice(
        server: tuple[ThreadServer, Path]) -> None:
    srv, _ = server
    body = os.urandom(1_000_000)
    with connect(srv) as s:
        s.sendall(head("expect", len(body), "Expect: 100-continue\r\n"))
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(1024)
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        code, answer, _ = read_response(s, bytearray(got.partition(b"\r\n\r\n")[2]))
    assert code == 200 and answer == {"size": len(body), "sha": sha(body)}


def splice_threads() -> int:
    return sum(t.name == "upload-body" for t in threading.enumerate())


def test_a_client_gone_mid_body_leaves_nothing(server: tuple[ThreadServer, Path]) -> None:
    """Half the body, then the connection closes: no file, no thread left, and the server
    goes on answering."""
    srv, root = server
    with connect(srv) as s:
        s.sendall(head("gone", 4_000_000) + os.urandom(2_000_000))
        wait_for(lambda: splice_threads() > 0, 10, "the splice to start")
    wait_for(lambda: splice_threads() == 0, 10, "the splice thread to end")
    wait_for(lambda: not any((root / "gone").glob("*")), 10, "the partial file to go")
    with connect(srv) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s, bytearray())[0] == 200


def test_a_stalled_body_is_408_and_the_connection_closes(
        server: tuple[ThreadServer, Path]) -> None:
    """The idle timeout (1 s here) holds on the spliced path: 408 with the reason, the
    partial file gone, and the connection closed (its parser is mid-body)."""
    srv, root = server
    with connect(srv) as s:
        s.sendall(head("stall", 1_000_000) + b"x" * 1000)
        time.sleep(0.1)
        s.sendall(b"y" * 1000)  # past the hand-over, then silence
        code, got, top = read_response(s, bytearray())
        assert code == 408 and "stalled" in str(got["detail"])
        assert b"connection: close" in top.lower()
        assert closed(s)
    assert not any((root / "stall").glob("*"))
    assert splice_threads() == 0


def test_the_size_limit_holds_before_the_hand_over(server: tuple[ThreadServer, Path]) -> None:
    """Content-Length over the limit: 413 before any byte is taken."""
    srv, root = server
    SPLICES.clear()
    with connect(srv) as s:
        s.sendall(head("big?max_size=1000", 5000) + b"z" * 100)
        code, got, _ = read_response(s, bytearray())
    assert code == 413 and "limit" in str(got["detail"])
    assert SPLICES == [] and not any((root / "big").glob("*"))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_mid_splice_is_507_and_leaves_nothing(
        server: tuple[ThreadServer, Path]) -> None:
    """The file refuses every write (ENOSPC: /dev/full, which has no splice either, so the
    pipe's bytes are written the plain way): 507, nothing left, the connection closed."""
    srv, root = server
    (root / "full").mkdir()
    (root / "full" / "upload.zip").symlink_to("/dev/full")
    with connect(srv) as s:
        s.sendall(head("full", 2_000_000))
        time.sleep(0.1)
        s.sendall(os.urandom(2_000_000))
        code, got, _ = read_response(s, bytearray())
        assert code == 507 and "disk space" in str(got["detail"])
        assert closed(s)
    assert not any((root / "full").glob("*"))
    assert splice_threads() == 0


def test_the_check_runs_after_every_piece_and_its_refusal_stops_the_splice(
        tmp_path: Path) -> None:
    """`check` (the free-space check, on the gateway) sees every piece moved; what it raises
    ends the splice, in the caller, with the thread gone."""
    from gateway.intake.splice import splice_body

    settings = Settings(_env_file=None, data_dir=tmp_path)
    a, b = socket.socketpair()
    a.setblocking(False)
    seen: list[int] = []

    def check(n: int) -> None:
        seen.append(n)
        if sum(seen) >= 3000:
            raise OSError(28, "no space left")

    async def main(fd: int) -> None:
        task = asyncio.create_task(splice_body(a.fileno(), fd, 10_000, Pace(settings), check))
        for _ in range(5):
            b.sendall(b"q" * 1000)
            await asyncio.sleep(0.05)
        with pytest.raises(OSError, match="no space"):
            await task

    try:
        with open(tmp_path / "out.bin", "wb") as f:
            asyncio.run(main(f.fileno()))
    finally:
        a.close()
        b.close()
    assert sum(seen) >= 3000 and splice_threads() == 0


def test_a_chunked_body_is_read_the_usual_way(server: tuple[ThreadServer, Path]) -> None:
    """No Content-Length, no tap: the parser reads the body as before."""
    srv, _ = server
    body = os.urandom(300_000)
    SPLICES.clear()
    with connect(srv) as s:
        s.sendall(b"POST /upload/chunked HTTP/1.1\r\nHost: x\r\nContent-Type: application/zip"
                  b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        code, got, _ = read_response(s, bytearray())
    assert code == 200 and got == {"size": len(body), "sha": sha(body)}
    assert SPLICES == []


def test_cancelled_splice_stops_its_thread(tmp_path: Path) -> None:
    """`splice_body` cancelled while the socket is quiet: it stops the thread (within
    STOP_CHECK_S) before re-raising, and the file is left as it was."""
    from gateway.intake.splice import splice_body

    settings = Settings(_env_file=None, data_dir=tmp_path)
    a, b = socket.socketpair()
    a.setblocking(False)
    target = tmp_path / "out.bin"

    async def main(fd: int) -> None:
        task = asyncio.create_task(splice_body(a.fileno(), fd, 10, Pace(settings), lambda _n: None))
        b.sendall(b"abc")
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert splice_threads() == 0

    try:
        with open(target, "wb") as f:
            asyncio.run(main(f.fileno()))
    finally:
        a.close()
        b.close()
    assert target.read_bytes() == b"abc"


def patch_head(name: str, offset: int, length: int, body: int) -> bytes:
    return (f"PATCH /tus/{name}?offset={offset}&length={length} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {body}\r\n\r\n").encode()


def test_a_tus_patch_is_spliced_at_its_offset_and_a_cut_keeps_what_arrived(
        server: tuple[ThreadServer, Path]) -> None:
    """tus on the spliced path: a first PATCH cut mid-body keeps every byte that arrived
    (the file's size is the offset to resume from); the second, from that offset, ends it."""
    srv, root = server
    body = os.urandom(3_000_000)
    (root / "t.bin").write_bytes(b"")
    SPLICES.clear()
    with connect(srv) as s:
        s.sendall(patch_head("t.bin", 0, len(body), len(body)) + body[:1000])
        time.sleep(0.2)
        s.sendall(body[1000:1_200_000])
        wait_for(lambda: (root / "t.bin").stat().st_size == 1_200_000, 10, "the bytes to land")
    wait_for(lambda: splice_threads() == 0, 10, "the splice thread to end")
    kept = (root / "t.bin").stat().st_size
    assert kept == 1_200_000
    with connect(srv) as s:
        s.sendall(patch_head("t.bin", kept, len(body), len(body) - kept))
        time.sleep(0.1)
        s.sendall(body[kept:])
        code, got, _ = read_response(s, bytearray())
    assert code == 200 and got == {"size": len(body)}
    assert (root / "t.bin").read_bytes() == body
    assert len(SPLICES) == 2


def test_a_tus_patch_past_its_length_is_413_and_keeps_the_file(
        server: tuple[ThreadServer, Path]) -> None:
    srv, root = server
    (root / "long.bin").write_bytes(b"12345")
    with connect(srv) as s:
        s.sendall(patch_head("long.bin", 5, 10, 100) + b"x" * 10)
        code, got, _ = read_response(s, bytearray())
        assert code == 413 and "Upload-Length" in str(got["detail"])
        assert closed(s)
    assert (root / "long.bin").read_bytes() == b"12345"


# Multipart bodies: the socket goes to a thread that runs the form's parser (`tap_body`).

BOUNDARY = "tapBoundary7MA4YWxk"


def form(data: bytes, *, name: str = "a.zip", files: int = 1) -> bytes:
    """A multipart body: a text field, `files` file parts carrying `data`, another field."""
    b = BOUNDARY.encode()
    out = (b"--" + b + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\nidentity\r\n')
    for _ in range(files):
        out += (b"--" + b + b'\r\nContent-Disposition: form-data; name="file"; filename="'
                + name.encode() + b'"\r\nContent-Type: application/zip\r\n\r\n' + data + b"\r\n")
    out += b"--" + b + b'\r\nContent-Disposition: form-data; name="note"\r\n\r\nx\r\n'
    return out + b"--" + b + b"--\r\n"


def form_head(job: str, length: int) -> bytes:
    return (f"POST /upload/{job} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n").encode()


def send_form(srv: ThreadServer, job: str, body: bytes, first: int = 0,
              ) -> tuple[int, dict[str, object], bytes, bool]:
    """The form in two sends, `first` bytes with the headers; (status, answer, its head,
    whether the server closed the connection after it)."""
    with connect(srv) as s:
        s.sendall(form_head(job, len(body)) + body[:first])
        time.sleep(0.2)
        # Refused mid-body, the server may close before all is sent: its answer is on its way.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(body[first:])
        code, got, top = read_response(s, bytearray())
        return code, got, top, closed(s)


@pytest.mark.parametrize("first", [0, 1, 90, 200, 300_001])
def test_a_form_split_anywhere_is_parsed_in_the_tap_thread(
        server: tuple[ThreadServer, Path], first: int) -> None:
    """A form sent in two pieces, the first ending anywhere (in a field, in the file part's
    headers, in its data): the file is the part's data, byte for byte, the rest of the body
    was read by the tap, and the connection stays open."""
    srv, _ = server
    data = os.urandom(3 * 1024 * 1024 + 5)
    body = form(data)
    SPLICES.clear()
    with connect(srv) as s:
        s.sendall(form_head(f"form{first}", len(body)) + body[:first])
        time.sleep(0.2)
        s.sendall(body[first:] + b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = bytearray()
        code, got, _ = read_response(s, buf)
        assert code == 200, got
        assert got == {"size": len(data), "sha": sha(data)}
        assert read_response(s, buf)[1] == {"hello": "world"}
    assert len(SPLICES) == 1
    before, rest = SPLICES[0]
    assert before + rest == len(body) and rest > 0


def test_a_malformed_form_is_400_and_leaves_nothing(server: tuple[ThreadServer, Path]) -> None:
    """A part header line without a colon, a megabyte into the body: refused in the thread,
    400 with the parser's reason, the partial file gone, the connection closed."""
    srv, root = server
    bad = form(os.urandom(1_000_000)) + b"--" + BOUNDARY.encode() + b"\r\nno colon here\r\n\r\n"
    code, got, _, was_closed = send_form(srv, "malformed", bad.replace(
        b"--" + BOUNDARY.encode() + b"--\r\n", b"", 1))
    assert code == 400 and "malformed multipart" in str(got["detail"])
    assert was_closed
    assert not any((root / "malformed").glob("*")) and splice_threads() == 0


def test_a_file_part_over_the_limit_is_413_mid_body(server: tuple[ThreadServer, Path]) -> None:
    """Content-Length within the limit's slack for form overhead, the file part itself over
    the limit: 413 once the part passes it, nothing left."""
    srv, root = server
    body = form(os.urandom(1_500_000))
    code, got, _, was_closed = send_form(srv, "over?max_size=1000000", body)
    assert code == 413 and "limit" in str(got["detail"])
    assert was_closed
    assert not any((root / "over").glob("*")) and splice_threads() == 0


def test_a_second_file_part_is_400(server: tuple[ThreadServer, Path]) -> None:
    srv, root = server
    code, got, _, _ = send_form(srv, "twofiles", form(os.urandom(500_000), files=2))
    assert code == 400 and "only one 'file'" in str(got["detail"])
    assert not any((root / "twofiles").glob("*"))


def test_a_form_cut_mid_body_or_stalled_leaves_nothing(server: tuple[ThreadServer, Path]) -> None:
    """The client goes away mid-file: no file, no thread. Another stops sending: 408."""
    srv, root = server
    body = form(os.urandom(4_000_000))
    with connect(srv) as s:
        s.sendall(form_head("formgone", len(body)) + body[:2_000_000])
        wait_for(lambda: splice_threads() > 0, 10, "the tap to start")
    wait_for(lambda: splice_threads() == 0, 10, "the tap thread to end")
    wait_for(lambda: not any((root / "formgone").glob("*")), 10, "the partial file to go")
    with connect(srv) as s:
        s.sendall(form_head("formstall", len(body)) + body[:1000])
        time.sleep(0.1)
        s.sendall(body[1000:300_000])
        code, got, _ = read_response(s, bytearray())
        assert code == 408 and "stalled" in str(got["detail"])
        assert closed(s)
    assert not any((root / "formstall").glob("*")) and splice_threads() == 0
