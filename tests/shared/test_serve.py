"""`shared.serve`: every service's uvicorn holds at most MAX_CONNECTIONS connections. A real
uvicorn server configured by `server_config`, in a thread, with idle sockets that sent only
part of their headers (a slowloris) and a real client beside them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.serve import READ_BYTES, HttpProtocol, SendTap, server_config
from shared.settings import Settings
from shared.timing import KEEP_ALIVE_S
from tests.support.servers import count_sendfile
from tests.support.waiting import wait_for


async def hello(_request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


@contextlib.contextmanager
def running(settings: Settings, app: Starlette | None = None) -> Iterator[str]:
    app = app or Starlette(routes=[Route("/", hello)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(app, "127.0.0.1", port, settings)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                              daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "server start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def half_open(url: str) -> socket.socket:
    """A connection that sent the start of a request and then nothing."""
    s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    return s


def get(url: str) -> int:
    with httpx.Client(timeout=30) as c:  # a fresh connection each time
        return c.get(url + "/").status_code


def test_config_carries_the_settings(tmp_path: Path) -> None:
    cfg = server_config(Starlette(), "127.0.0.1", 1, Settings(_env_file=None, max_connections=7,
                                                            data_dir=tmp_path))
    assert cfg.limit_concurrency == 7 and cfg.backlog == 7
    assert cfg.timeout_keep_alive == KEEP_ALIVE_S <= 15


def test_connections_beyond_max_connections_get_503(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, max_connections=3, data_dir=tmp_path)
    with running(settings) as url:
        first = half_open(url)
        try:
            assert get(url) == 200  # two connections: room left
            second = half_open(url)
            try:
                # Two idle connections plus this one make three: the limit is reached.
                wait_for(lambda: get(url) == 503, 10, "503 at the limit")
            finally:
                second.close()
        finally:
            first.close()
        wait_for(lambda: get(url) == 200, 10, "room again once the idle sockets went")


def test_every_service_parses_http_with_httptools() -> None:
    """The C parser, named: uploads run at the wire's speed only on it, and a machine without
    it fails at start-up instead of falling back to h11 unnoticed."""
    config = server_config(Starlette(), "127.0.0.1", 0, Settings())
    config.load()
    assert config.http_protocol_class is HttpProtocol
    assert issubclass(HttpProtocol, HttpToolsProtocol)


async def digest(request: Request) -> JSONResponse:
    """sha256 and size of the body, read at the pace `?pause=` asks (seconds per piece), so
    pieces pile up in the protocol between two reads and take its joining path too."""
    pause = float(request.query_params.get("pause", "0"))
    h, size, pieces, whole = hashlib.sha256(), 0, 0, 0
    async for chunk in request.stream():
        h.update(chunk)
        size, pieces = size + len(chunk), pieces + 1
        whole += type(chunk) is bytes
        if pause:
            await asyncio.sleep(pause)
    return JSONResponse({"sha256": h.hexdigest(), "size": size, "pieces": pieces,
                         "whole": whole})


@pytest.mark.parametrize("pause", [0.0, 0.002])
def test_request_bodies_arrive_intact_without_copies(tmp_path: Path, pause: float) -> None:
    body = os.urandom(24 * 1024 * 1024 + 7)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), 100_003):
            yield body[i : i + 100_003]

    app = Starlette(routes=[Route("/d", digest, methods=["POST"])])
    with running(Settings(data_dir=tmp_path), app) as url:
        for content in (body, pieces()):  # with Content-Length, and chunked
            r = httpx.post(f"{url}/d?pause={pause}", content=content, timeout=120)
            got = r.json()
            assert got["sha256"] == hashlib.sha256(body).hexdigest()
            assert got["size"] == len(body)
            assert got["whole"] == got["pieces"]  # every piece a bytes object, as ASGI says


def test_one_read_buffer_serves_split_and_pipelined_requests(tmp_path: Path) -> None:
    """The protocol reads every connection into one reused buffer: requests whose headers and
    bodies arrive a few bytes at a time on two interleaved connections, and two requests
    pipelined in one write, each get exactly their own bytes."""
    app = Starlette(routes=[Route("/d", digest, methods=["POST"])])
    bodies = [os.urandom(5000), os.urandom(7000)]

    def request(body: bytes) -> bytes:
        return (b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body

    def answers(sock: socket.socket, n: int) -> list[dict[str, object]]:
        got, out = b"", []
        sock.settimeout(30)
        while len(out) < n:
            got += sock.recv(65536)
            while b"\r\n\r\n" in got:
                head, rest = got.split(b"\r\n\r\n", 1)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(rest) < length:
                    break
                out.append(json.loads(rest[:length]))
                got = rest[length:]
        return out

    with running(Settings(data_dir=tmp_path), app) as url:
        port = int(url.rsplit(":", 1)[1])
        a, b = (socket.create_connection(("127.0.0.1", port)) for _ in range(2))
        with a, b:
            ra, rb = request(bodies[0]), request(bodies[1])
            for i in range(0, max(len(ra), len(rb)), 997):
                a.sendall(ra[i : i + 997])
                b.sendall(rb[i : i + 997])
            for sock, body in ((a, bodies[0]), (b, bodies[1])):
                (got,) = answers(sock, 1)
                assert got["sha256"] == hashlib.sha256(body).hexdigest()
            a.sendall(request(bodies[1]) + request(bodies[0]))
            first, second = answers(a, 2)
            assert first["sha256"] == hashlib.sha256(bodies[1]).hexdigest()
            assert second["sha256"] == hashlib.sha256(bodies[0]).hexdigest()


def test_a_client_faster_than_its_app_is_held_at_the_flow_control_bound(tmp_path: Path) -> None:
    """Flow control: an app that takes its body slowly (nothing until the socket is paused,
    then a piece per pause) holds at most one read plus uvicorn's HIGH_WATER_LIMIT of it
    unread however fast the client sends, and still gets every byte, in order. What a
    connection can make a service hold (docs/guarantees.md, "unread request body")."""
    seen: dict[str, int] = {}

    async def slow(request: Request) -> JSONResponse:
        cycle = request.receive.__self__  # type: ignore[attr-defined]  # the protocol's cycle
        for _ in range(3000):  # the client sends all it can until reading pauses (≤ 30 s)
            if cycle.flow.read_paused:
                break
            await asyncio.sleep(0.01)
        seen["paused"] = cycle.flow.read_paused
        seen["held_first"] = len(cycle.body)
        h, size, held = hashlib.sha256(), 0, 0
        async for chunk in request.stream():
            held = max(held, len(chunk) + len(cycle.body))
            h.update(chunk)
            size += len(chunk)
            await asyncio.sleep(0.01)
        seen["held"] = held
        return JSONResponse({"sha256": h.hexdigest(), "size": size})

    body = os.urandom(48 * 1024 * 1024)
    app = Starlette(routes=[Route("/slow", slow, methods=["POST"])])
    with running(Settings(data_dir=tmp_path), app) as url:
        got = httpx.post(f"{url}/slow", content=body, timeout=300).json()
    assert got == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    assert seen["paused"]
    assert 0 < seen["held_first"] <= READ_BYTES + HIGH_WATER_LIMIT
    assert seen["held"] <= READ_BYTES + HIGH_WATER_LIMIT


def test_receive_after_the_body_waits_for_the_disconnect(tmp_path: Path) -> None:
    """Once the body is read, the next receive() waits (Starlette and sse-starlette listen
    there for a client that goes away while they stream an answer, in a loop that would
    block the event loop if it answered at once)."""
    after: list[str] = []

    async def app(scope: dict[str, object], receive: Callable[[], Awaitable[dict[str, object]]],
                  send: Callable[[dict[str, object]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        size, more = 0, True
        while more:
            msg = await receive()
            size += len(msg.get("body", b""))  # type: ignore[arg-type]
            more = bool(msg.get("more_body"))
        try:
            msg = await asyncio.wait_for(receive(), 0.5)
            after.append(str(msg["type"]))
        except TimeoutError:
            after.append("waited")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})

    body = os.urandom(8 * 1024 * 1024 + 3)
    with running(Settings(data_dir=tmp_path), app) as url:  # type: ignore[arg-type]
        assert httpx.post(f"{url}/", content=body, timeout=60).text == str(len(body))
    assert after == ["waited"]


def test_a_client_gone_before_its_body_is_read_is_a_disconnect(tmp_path: Path) -> None:
    """A client that sends part of its body and hangs up while the app has not read it: the
    app's next read says so (Starlette's ClientDisconnect), as on uvicorn's own protocol."""
    outcome: list[str] = []

    async def late(request: Request) -> PlainTextResponse:
        await asyncio.sleep(1.0)
        try:
            async for _chunk in request.stream():
                pass
            outcome.append("read")
        except ClientDisconnect:
            outcome.append("disconnect")
        return PlainTextResponse("")

    app = Starlette(routes=[Route("/late", late, methods=["POST"])])
    with running(Settings(data_dir=tmp_path), app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
            s.sendall(os.urandom(1_500_000))
        wait_for(lambda: outcome, 30, "the app's read")
    assert outcome == ["disconnect"]


# --- a file sent by the kernel: the ASGI path-send extension (`shared.serve.PATHSEND`)
def file_app(path: Path) -> Starlette:
    async def whole(_request: Request) -> FileResponse:
        return FileResponse(path, media_type="application/octet-stream")

    return Starlette(routes=[Route("/file", whole), Route("/", hello)])


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes of every `os.sendfile` call (the real one)."""
    return count_sendfile(monkeypatch)


def test_a_file_response_is_sent_by_sendfile_and_the_connection_goes_on(
        tmp_path: Path, sendfile_calls: list[int]) -> None:
    body = os.urandom(6 << 20)  # more than the socket holds: sendfile waits on it, full
    (tmp_path / "f.bin").write_bytes(body)
    with running(Settings(data_dir=tmp_path), file_app(tmp_path / "f.bin")) as url, \
            httpx.Client(base_url=url, timeout=30) as c:
        for _ in range(2):  # the second on the same kept-alive connection
            r = c.get("/file")
            assert r.status_code == 200 and r.content == body
            assert int(r.headers["content-length"]) == len(body)
        assert c.get("/").text == "hello"
        r = c.get("/file", headers={"Range": "bytes=100-199"})  # a range: sent by the app
        assert r.status_code == 206 and r.content == body[100:200]
    assert sum(sendfile_calls) == 2 * len(body)


def test_a_client_gone_mid_file_leaves_the_server_serving(
        tmp_path: Path, sendfile_calls: list[int]) -> None:
    body = os.urandom(16 << 20)
    (tmp_path / "f.bin").write_bytes(body)
    with running(Settings(data_dir=tmp_path), file_app(tmp_path / "f.bin")) as url:
        s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        s.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # a reset, most of the file unsent
        r = httpx.get(f"{url}/file", timeout=30)
        assert r.status_code == 200 and r.content == body
    assert sum(sendfile_calls) < 2 * len(body)


def test_a_socket_that_cannot_be_lent_gets_the_file_through_the_loop(
        tmp_path: Path, sendfile_calls: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    async def not_lent(_self: SendTap) -> None:
        return None

    monkeypatch.setattr(SendTap, "take", not_lent)
    body = os.urandom(3 << 20)
    (tmp_path / "f.bin").write_bytes(body)
    with running(Settings(data_dir=tmp_path), file_app(tmp_path / "f.bin")) as url, \
            httpx.Client(base_url=url, timeout=30) as c:
        for _ in range(2):
            r = c.get("/file")
            assert r.status_code == 200 and r.content == body
    assert sendfile_calls == []
