"""`shared.serve`: every service's uvicorn holds at most MAX_CONNECTIONS connections. A real
uvicorn server configured by `server_config`, in a thread, with idle sockets that sent only
part of their headers (a slowloris) and a real client beside them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shared.serve import server_config
from shared.settings import Settings
from shared.timing import KEEP_ALIVE_S
from tests.support.waiting import wait_for


async def hello(_request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[str]:
    app = Starlette(routes=[Route("/", hello)])
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
    assert config.http == "httptools"
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
