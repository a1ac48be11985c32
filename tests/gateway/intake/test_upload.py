import asyncio
import hashlib
import os
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

from gateway.api.errors import add_error_handlers, request_body
from gateway.errors import BadRequest, ClientGone, InsufficientStorage, PayloadTooLarge
from gateway.intake.receive import MAX_PART_HEADERS_BYTES, Received, receive_upload
from gateway.intake.spool import WRITE_BYTES
from tests.support.servers import ThreadServer


def make_app(root: Path) -> FastAPI:
    app = FastAPI()
    add_error_handlers(app)

    @app.post("/upload/{job}")
    async def upload(
        job: str, request: Request, max_size: int = 1 << 30, min_free: int = 0
    ) -> dict[str, object]:
        got = await receive_upload(request_body(request), request.headers, root / job, max_size,
                                   min_free, request.query_params.get("filename"))
        return {"path": str(got.path), "filename": got.filename, "size": got.size}

    return app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("uploads")
    with ThreadServer(make_app(root)) as srv:
        yield srv.url, root


def files_in(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_multipart_streams_the_file_field(server: tuple[str, Path]) -> None:
    url, root = server
    body = os.urandom(9 * 1024 * 1024 + 123)  # several flushes
    r = httpx.post(
        f"{url}/upload/mp",
        files={"file": ("dir\\My Photos.ZIP", body, "application/zip")},
        data={"note": "ignored field"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["filename"] == "My Photos.ZIP" and got["size"] == len(body)
    assert Path(got["path"]) == root / "mp" / "upload.zip"
    assert hashlib.sha256(Path(got["path"]).read_bytes()).digest() == hashlib.sha256(body).digest()


@pytest.mark.parametrize(
    ("ctype", "query", "expected"),
    [
        ("application/zip", "", "upload.zip"),
        ("application/gzip", "", "upload.tar.gz"),
        ("application/octet-stream", "?filename=set.tgz", "upload.tar.gz"),
        ("application/x-tar", "?filename=a/b/set.tar", "upload.tar"),
        ("image/png", "", "upload.png"),
        ("image/jpeg", "?filename=cat.JPEG", "upload.jpg"),
    ],
)
def test_raw_body(server: tuple[str, Path], ctype: str, query: str, expected: str) -> None:
    url, root = server
    job = f"raw-{expected}-{len(query)}"
    body = b"0123456789" * 1000
    r = httpx.post(f"{url}/upload/{job}{query}", content=body, headers={"content-type": ctype})
    assert r.status_code == 200, r.text
    assert Path(r.json()["path"]).name == expected
    assert (root / job / expected).read_bytes() == body


def test_chunked_raw_body_without_length(server: tuple[str, Path]) -> None:
    url, root = server

    def gen() -> Iterator[bytes]:
        for i in range(40):
            yield bytes([i]) * 100_000

    r = httpx.post(
        f"{url}/upload/chunked?filename=x.tar",
        content=gen(),
        headers={"content-type": "application/x-tar"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert (root / "chunked" / "upload.tar").stat().st_size == 4_000_000


def test_413_early_from_content_length(server: tuple[str, Path]) -> None:
    url, root = server
    r = httpx.post(
        f"{url}/upload/big?max_size=1000",
        content=b"x" * 5000,
        headers={"content-type": "application/zip"},
    )
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert files_in(root / "big") == []


def test_413_while_streaming_removes_the_partial_file(server: tuple[str, Path]) -> None:
    url, root = server

    def gen() -> Iterator[bytes]:
        for _ in range(32):
            yield b"y" * 65536

    try:
        r = httpx.post(
            f"{url}/upload/stream413?max_size=1000000",
            content=gen(),
            headers={"content-type": "application/zip"},
            timeout=30,
        )
        assert r.status_code == 413
    except httpx.TransportError:
        pass  # the server may close before the client finished sending; the file is what matters
    assert files_in(root / "stream413") == []


def test_multipart_413_counts_only_the_file(server: tuple[str, Path]) -> None:
    url, root = server
    r = httpx.post(f"{url}/upload/mp413?max_size=100", files={"file": ("a.zip", b"z" * 101)})
    assert r.status_code == 413
    assert files_in(root / "mp413") == []
    ok = httpx.post(f"{url}/upload/mp100?max_size=100", files={"file": ("a.zip", b"z" * 100)})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 415, "content type"),
        ({"content": b"abc"}, 415, "content type"),
        ({"files": {"other": ("a.zip", b"abc")}}, 400, "no 'file' field"),
        ({"files": {"file": ("a.rar", b"abc")}}, 400, "unsupported file type"),
        ({"files": {"file": ("a.zip", b"")}}, 400, "empty upload"),
        ({"content": b"", "headers": {"content-type": "application/zip"}}, 400, "empty upload"),
        (
            {"content": b"abc", "headers": {"content-type": "application/octet-stream"}},
            400,
            "missing filename",
        ),
        ({"content": b"abc", "headers": {"content-type": "multipart/form-data"}}, 400, "boundary"),
        (
            {
                "content": b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.zip"'
                b"\r\n\r\nabc",
                "headers": {"content-type": "multipart/form-data; boundary=xx"},
            },
            400,
            "incomplete",
        ),
    ],
)
def test_bad_requests(
    server: tuple[str, Path], kwargs: dict[str, object], status: int, needle: str
) -> None:
    url, root = server
    job = f"bad{status}{needle.replace(' ', '').replace(chr(39), '')}"
    r = httpx.post(f"{url}/upload/{job}", **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    assert files_in(root / job) == []


def test_507_when_the_disk_is_short(server: tuple[str, Path]) -> None:
    url, root = server
    r = httpx.post(
        f"{url}/upload/full?min_free={1 << 62}",
        content=b"abc",
        headers={"content-type": "application/zip"},
    )
    assert r.status_code == 507 and "disk space" in r.json()["detail"]
    assert files_in(root / "full") == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_enospc_while_writing_is_507(server: tuple[str, Path]) -> None:
    url, root = server
    (root / "enospc").mkdir()
    (root / "enospc" / "upload.zip").symlink_to("/dev/full")  # every write fails with ENOSPC
    r = httpx.post(
        f"{url}/upload/enospc", content=b"a" * 10_000, headers={"content-type": "application/zip"}
    )
    assert r.status_code == 507
    assert files_in(root / "enospc") == []


# --- The body as the parser meets it: any chunking, truncation at any byte, huge headers ---
# `receive_upload` is fed by hand here, so every chunk boundary is the test's to choose.

B = b"b0und4ry"
TRICKY = (b"\r\n--b0und4r" + os.urandom(200) + b"\r\n-" + b"\r--b0und4ry-" + os.urandom(300)
          + b"\r\n--b0und4")  # near-misses of the delimiter, one at the very end
FORM_HEAD = (b'--b0und4ry\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
             b'--b0und4ry\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n'
             b"Content-Type: application/zip\r\n\r\n")
FORM_TAIL = b"\r\n--b0und4ry--\r\n"
FORM = FORM_HEAD + TRICKY + FORM_TAIL
MULTIPART = {"content-type": "multipart/form-data; boundary=b0und4ry"}
RAW = {"content-type": "application/zip"}


async def feed(chunks: list[bytes], cut: bool = False) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c
    if cut:
        raise ClientGone()


async def receive(dest: Path, chunks: list[bytes], headers: dict[str, str],
                  cut: bool = False, max_size: int = 1 << 30) -> Received:
    return await receive_upload(feed(chunks, cut), headers, dest, max_size, 0)


def test_multipart_split_at_every_offset(tmp_path: Path) -> None:
    """Two chunks, split at each byte: part headers, the delimiter and its near-misses cut
    anywhere; plus the whole form a byte at a time."""

    async def go() -> None:
        for k in range(len(FORM) + 1):
            got = await receive(tmp_path / str(k), [FORM[:k], FORM[k:]], MULTIPART)
            assert got.path.read_bytes() == TRICKY, k
            assert got.filename == "a.zip" and got.size == len(TRICKY)
        got = await receive(tmp_path / "bytes", [FORM[i : i + 1] for i in range(len(FORM))],
                            MULTIPART)
        assert got.path.read_bytes() == TRICKY

    asyncio.run(go())


def test_multipart_truncated_at_every_offset_is_refused_and_removed(tmp_path: Path) -> None:
    """A form cut anywhere before its file part's delimiter is complete is a 400, whether the
    stream ends or the client goes away, and leaves no file behind."""
    delimited = len(FORM_HEAD) + len(TRICKY) + len(b"\r\n--b0und4ry")

    async def go() -> None:
        for k in range(delimited):
            for cut in (False, True):
                dest = tmp_path / f"{k}-{cut}"
                with pytest.raises(BadRequest):
                    await receive(dest, [FORM[:k]], MULTIPART, cut=cut)
                assert files_in(dest) == [], k

    asyncio.run(go())


def test_big_bodies_in_odd_chunks_round_trip(tmp_path: Path) -> None:
    """Several write batches, chunk sizes that never line up with them, raw and multipart."""
    content = os.urandom(3 * WRITE_BYTES + 12345)
    sizes = [1, 65536, 262144 + 3, 999_999, 17]

    def chunked(data: bytes) -> list[bytes]:
        out, i = [], 0
        while i < len(data):
            out.append(data[i : i + sizes[len(out) % len(sizes)]])
            i += len(out[-1])
        return out

    async def go() -> None:
        raw = await receive(tmp_path / "raw", chunked(content), RAW)
        form = await receive(tmp_path / "form", chunked(FORM_HEAD + content + FORM_TAIL),
                             MULTIPART)
        for got in (raw, form):
            assert got.size == len(content)
            assert hashlib.sha256(got.path.read_bytes()).digest() == \
                hashlib.sha256(content).digest()

    asyncio.run(go())


def test_a_client_gone_with_writes_in_flight_leaves_nothing(tmp_path: Path) -> None:
    chunks = [os.urandom(256 * 1024)] * (3 * WRITE_BYTES // (256 * 1024))

    async def go() -> None:
        for name, headers, body in (("raw", RAW, chunks),
                                    ("form", MULTIPART, [FORM_HEAD, *chunks])):
            with pytest.raises(BadRequest, match="interrupted"):
                await receive(tmp_path / name, body, headers, cut=True)
            assert files_in(tmp_path / name) == []
            with pytest.raises(PayloadTooLarge):
                await receive(tmp_path / f"{name}-413", body, headers,
                              max_size=2 * WRITE_BYTES + 1)
            assert files_in(tmp_path / f"{name}-413") == []

    asyncio.run(go())


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        # One endless header line: python-multipart's own per-line limit, or ours.
        ([b"X-Pad: " + b"a" * (1 << 20)], "multipart"),
        # Lines each under any per-line limit, together past MAX_PART_HEADERS_BYTES.
        ([b"X-Pad%d: " % i + b"a" * 4000 for i in range(5)], "part headers longer than"),
    ],
)
def test_huge_part_headers_are_refused(tmp_path: Path, headers: list[bytes],
                                       needle: str) -> None:
    head = (b'--b0und4ry\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n'
            + b"\r\n".join(headers) + b"\r\n\r\n")
    body = head + b"data" + FORM_TAIL

    async def go() -> None:
        chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        with pytest.raises(BadRequest, match=needle):
            await receive(tmp_path / "h", chunks, MULTIPART)

    asyncio.run(go())
    assert files_in(tmp_path / "h") == []
    assert sum(len(h) for h in headers) > MAX_PART_HEADERS_BYTES


def test_memory_stays_flat_whatever_the_size(tmp_path: Path) -> None:
    """48 MiB in fresh 256 KiB pieces, raw and multipart: what the receive path holds at once
    (tracemalloc's peak, Python allocations) is two write batches, not the body: one
    gathering, one in flight."""
    piece = os.urandom(256 * 1024)

    async def body(head: bytes, tail: bytes) -> AsyncIterator[bytes]:
        yield head
        for _ in range(192):
            yield bytes(bytearray(piece))  # a new object each time, as the socket gives
        yield tail

    async def go() -> None:
        await receive_upload(body(b"", b""), RAW, tmp_path / "raw", 1 << 30, 0)
        await receive_upload(body(FORM_HEAD, FORM_TAIL), MULTIPART, tmp_path / "form",
                             1 << 30, 0)

    tracemalloc.start()
    try:
        asyncio.run(go())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "raw" / "upload.zip").stat().st_size == 48 << 20
    assert (tmp_path / "form" / "upload.zip").stat().st_size == 48 << 20
    assert peak < 3 * WRITE_BYTES, peak


def upload_writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "upload-writer"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("headers", [RAW, MULTIPART], ids=["raw", "multipart"])
def test_a_write_failing_in_the_writer_thread_mid_body_is_507_and_leaves_nothing(
    tmp_path: Path, headers: dict[str, str],
) -> None:
    """The writer thread's first write fails (ENOSPC, from /dev/full) while the body is still
    arriving: the refusal is a 507 (not a 500, not a hang), the file goes, no batch is held
    and no writer thread is left behind."""
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "upload.zip").symlink_to("/dev/full")
    piece = os.urandom(256 * 1024)
    pieces = [piece] * 32  # 8 MiB: the failure is met mid-body, at a flush
    if headers is MULTIPART:
        pieces = [FORM_HEAD, *pieces, FORM_TAIL]
    before = len(upload_writers())
    with pytest.raises(InsufficientStorage, match="disk space"):
        asyncio.run(receive(dest, pieces, headers))
    assert files_in(dest) == []
    assert len(upload_writers()) == before


def test_413_mid_body_with_a_write_in_flight_stops_the_writer(tmp_path: Path) -> None:
    """The size limit on the threaded path: past `max_size` while batches are being written,
    413, the partial file removed, the writer thread gone."""
    before = len(upload_writers())
    pieces = [os.urandom(512 * 1024) for _ in range(12)]
    with pytest.raises(PayloadTooLarge):
        asyncio.run(receive(tmp_path / "big", pieces, RAW, max_size=5 * WRITE_BYTES + 1))
    assert files_in(tmp_path / "big") == []
    assert len(upload_writers()) == before
