import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

from gateway.api.errors import add_error_handlers, request_body
from gateway.intake.receive import receive_upload
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
