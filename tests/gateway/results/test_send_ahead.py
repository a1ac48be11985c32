"""The download's reading thread: pieces in order, a bounded few ahead, errors and a client
gone (issue 17, README "The download, fourth pass")."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from gateway.results.send_ahead import AHEAD_PIECES, send_ahead
from tests.support.servers import ThreadServer
from tests.support.waiting import async_wait_for, wait_for


class Pieces:
    """A blocking iterator that records how far it got, in which thread, and its close."""

    def __init__(self, count: int | None, fail_at: int | None = None,
                 size: int = 10) -> None:
        self.count, self.fail_at, self.size = count, fail_at, size
        self.made = 0
        self.threads: set[str] = set()
        self.closed_in: str | None = None
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return self.run()

    def run(self) -> Iterator[bytes]:
        try:
            while self.count is None or self.made < self.count:
                self.threads.add(threading.current_thread().name)
                if self.made == self.fail_at:
                    raise OSError("a member changed")
                self.made += 1
                yield self.made.to_bytes(4, "big") * (self.size // 4)
        finally:
            self.closed_in = threading.current_thread().name
            self.closed.set()


async def test_every_piece_in_order_read_in_its_own_thread_then_closed_there() -> None:
    src = Pieces(50)
    got = [piece async for piece in send_ahead(iter(src))]
    assert [int.from_bytes(p[:4], "big") for p in got] == list(range(1, 51))
    assert src.threads == {"zip-send"}  # never on the event loop's thread
    assert src.closed.wait(10) and src.closed_in == "zip-send"


async def test_the_reading_stays_a_bounded_few_pieces_ahead_of_a_slow_consumer() -> None:
    src = Pieces(None)  # endless: only the bound stops it
    ahead = send_ahead(iter(src))
    first = await anext(ahead)
    assert int.from_bytes(first[:4], "big") == 1
    # the thread fills the queue and waits: at most AHEAD_PIECES queued, one more in hand
    await async_wait_for(lambda: src.made >= AHEAD_PIECES, 10, "the reading to run ahead")
    await asyncio.sleep(0.2)  # time to run on if it would (the bound holds however long)
    assert src.made <= 1 + AHEAD_PIECES + 1
    await ahead.aclose()
    assert src.closed.wait(10) and src.closed_in == "zip-send"


async def test_an_error_in_the_reading_reaches_the_consumer_after_the_pieces_before_it() -> None:
    src = Pieces(10, fail_at=3)
    got: list[bytes] = []
    with pytest.raises(OSError, match="a member changed"):
        async for piece in send_ahead(iter(src)):
            got.append(piece)
    assert len(got) == 3
    assert src.closed.wait(10)


async def test_a_consumer_that_stops_early_ends_the_thread_and_closes_the_pieces() -> None:
    src = Pieces(None)
    ahead = send_ahead(iter(src))
    await anext(ahead)
    await ahead.aclose()
    assert src.closed.wait(10)
    wait_for(lambda: not any(t.name == "zip-send" for t in threading.enumerate()), 10,
             "the reading thread to end")


def test_a_client_gone_mid_download_ends_the_reading_on_a_real_server() -> None:
    """Through uvicorn: the client reads one piece and hangs up; the reading thread stops and
    the zip's iterator is closed (its cleanup runs: a partial download's temporary folder)."""
    src = Pieces(None, size=256 * 1024)

    async def endless(request: Request) -> StreamingResponse:
        return StreamingResponse(send_ahead(iter(src)), media_type="application/zip")

    app = Starlette(routes=[Route("/zip", endless)])
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        with c.stream("GET", "/zip") as r:
            assert r.status_code == 200
            for _ in r.iter_raw(64 * 1024):
                break
        assert src.closed.wait(30), "the zip's iterator was not closed after the client left"
        assert src.closed_in == "zip-send"
        assert src.made < 1000  # stopped, not read to no one


# --- the rows' pages, one read ahead of the sending (`zip_stream._pages_from`) -----------------
class _Loop:
    """An event loop in a thread, as the gateway's is to the zip's reading thread."""

    def __enter__(self) -> asyncio.AbstractEventLoop:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self.loop

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_pages_come_in_order_with_the_next_one_already_asked_for() -> None:
    from gateway.results.zip_stream import _pages_from

    asked: list[int] = []

    async def pages() -> AsyncIterator[list[int]]:
        for i in range(5):
            asked.append(i)
            yield [i]

    with _Loop() as loop:
        got = []
        for page in _pages_from(pages(), loop):
            got.append(page[0])
            # the page after this one is read while this one is being sent
            wait_for(lambda p=page[0]: max(asked) == min(p + 1, 4), 10, "the read ahead")
        assert got == [0, 1, 2, 3, 4]


def test_a_zip_abandoned_mid_walk_cancels_the_page_read_ahead() -> None:
    from gateway.results.zip_stream import _pages_from

    stopped = threading.Event()

    async def pages() -> AsyncIterator[list[int]]:
        try:
            yield [0]
            await asyncio.Event().wait()  # a read that never ends
            yield [1]
        finally:
            stopped.set()

    with _Loop() as loop:
        walk = _pages_from(pages(), loop)
        assert next(walk) == [0]
        walk.close()  # `zip_chunks` closes the stream when the client goes
        assert stopped.wait(10), "the read ahead was left running"
