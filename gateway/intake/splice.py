"""A raw upload body from the socket to its file with no copy through Python: `os.splice`.

Why (issue 17, "Upload at the speed of the wire", the fourth pass; BENCHMARKS.md "Upload
speed: the fourth pass"): a body read the usual way crosses user space three times — the
kernel copies each socket read into the server's buffer, httptools copies the body piece out
of it into a `bytes`, and the writer thread's `writev` copies it into the page cache — with a
few µs of Python per piece on the event loop. `splice(2)` moves the socket's pages into a
pipe and from the pipe into the file inside the kernel: one copy (into the page cache), no
Python per byte, and the event loop is idle meanwhile.

The server hands the socket over (`SocketBody`, `shared.serve.BodyTap`: reading paused, the
pieces that already arrived, the byte count still to come); one thread per upload moves
exactly that many bytes and then hands the socket back, its HTTP parser set to the next
request (keep-alive), or, when the body did not end (an error, a cut), marked to close after
the answer. Every rule of a body read the usual way holds here too: the caller has checked
Content-Length against the size limit and the free space before; `check` runs after every
piece, as the writer thread's does (the free-space check every DISK_CHECK_BYTES); the pace
(`gateway.intake.pacing.Pace`: idle timeout, minimum rate) is checked while the thread waits
on the socket; a client that goes away is `ClientGone`; a cancelled upload stops the thread
within STOP_CHECK_S, and nothing touches the file after `splice_body` returns or raises.

A multipart body cannot be spliced (its boundary must be seen), but it is read the same way,
by `tap_body`: the same thread, loop and rules, each piece `os.read` into Python and handed
to the form's parser there, which writes the file part at once — the two copies of a plain
socket-to-file loop instead of three, and no event loop or HTTP parser per piece.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import threading
from collections.abc import Callable
from typing import Protocol

from gateway.errors import ClientGone, UploadStalled
from gateway.intake.pacing import Pace
from shared.storage import write_all
from shared.threads import CLIENT_ERRORS, STOP_CHECK_S, in_own_thread

__all__ = ["PIPE_BYTES", "STOP_CHECK_S", "SocketBody", "splice_body", "tap_body"]

PIPE_BYTES = 1 << 20
"""The pipe between socket and file, and the most one `splice` moves: 1 MiB (Linux's default
`pipe-max-size`), as a read of the usual path (`shared.serve.READ_BYTES`); a pipe that cannot
grow (an unprivileged process past `pipe-user-pages-soft`) keeps its 64 KiB and still works."""
_F_SETPIPE_SZ = 1031
"""fcntl's F_SETPIPE_SZ (Linux; Python's `fcntl` has it only from 3.10 on some platforms)."""


class SocketBody(Protocol):
    """The rest of one request's body, as the socket itself (`shared.serve.BodyTap`)."""

    def take(self) -> tuple[list[bytes], int, int] | None:
        """Pause the socket and hand it over: (pieces that already arrived, in order; the
        socket's file descriptor; bytes still to come). None when it cannot be had (the body
        already arrived whole, the connection is closing): read the body the usual way."""

    def release(self, complete: bool) -> None:
        """Give the socket back: `complete` when exactly the bytes still to come were read,
        so the connection may carry the next request; otherwise it closes after the answer."""


class _Stopped(Exception):
    """The upload was cancelled: the thread stops between two pieces."""


def _splice(sock: int, fd: int, count: int, pace: Pace, check: Callable[[int], None],
            stop: threading.Event) -> int:
    """In the upload's thread: move `count` bytes from `sock` to `fd`'s position; the count."""
    r, w = os.pipe()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_BYTES)
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        moved = 0
        to_file = True
        pace.waiting()
        while moved < count:
            if stop.is_set():
                raise _Stopped
            wait, reason = pace.due()
            if wait <= 0:
                raise UploadStalled(reason)
            try:
                n = os.splice(sock, w, min(count - moved, PIPE_BYTES), flags=os.SPLICE_F_MOVE)
            except BlockingIOError:  # the socket is non-blocking: wait for it, not longer
                poller.poll(int(min(wait, STOP_CHECK_S) * 1000) + 1)
                continue
            except OSError as exc:
                if exc.errno in CLIENT_ERRORS:
                    raise ClientGone() from exc
                raise
            if n == 0:
                raise ClientGone()
            pace.add(n)
            left = n
            while left:  # the pipe holds the n bytes: this side never waits on the client
                if to_file:
                    try:
                        left -= os.splice(r, fd, left, flags=os.SPLICE_F_MOVE)
                        continue
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        to_file = False  # a target without splice (a device): write instead
                data = os.read(r, left)
                write_all(fd, [data])
                left -= len(data)
            moved += n
            check(n)
            pace.waiting()
        return moved
    finally:
        os.close(r)
        os.close(w)


def _read(sock: int, count: int, pace: Pace, stop: threading.Event,
          consume: Callable[[bytes], object]) -> int:
    """Read exactly `count` bytes from `sock` a piece at a time, each handed to `consume` (in
    this thread) before the next read; the count."""
    moved = 0
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    pace.waiting()
    while moved < count:
        if stop.is_set():
            raise _Stopped
        wait, reason = pace.due()
        if wait <= 0:
            raise UploadStalled(reason)
        try:
            data = os.read(sock, min(count - moved, PIPE_BYTES))
        except BlockingIOError:
            poller.poll(int(min(wait, STOP_CHECK_S) * 1000) + 1)
            continue
        except OSError as exc:
            if exc.errno in CLIENT_ERRORS:
                raise ClientGone() from exc
            raise
        if not data:
            raise ClientGone()
        pace.add(len(data))
        consume(data)
        moved += len(data)
        pace.waiting()
    return moved


def _copy(sock: int, fd: int, count: int, pace: Pace, check: Callable[[int], None],
          stop: threading.Event) -> int:
    """`_splice` for a socket that has no `splice` (EINVAL at the first one): a read and a
    write per piece."""

    def write(data: bytes) -> None:
        write_all(fd, [data])
        check(len(data))

    return _read(sock, count, pace, stop, write)


def _move(sock: int, fd: int, count: int, pace: Pace, check: Callable[[int], None],
          stop: threading.Event) -> int:
    try:
        return _splice(sock, fd, count, pace, check, stop)
    except OSError as exc:
        # The socket refused the first splice: nothing was read from it yet.
        if exc.errno != errno.EINVAL or pace.received:
            raise
    return _copy(sock, fd, count, pace, check, stop)


async def splice_body(sock: int, fd: int, count: int, pace: Pace,
                      check: Callable[[int], None]) -> int:
    """Move exactly `count` bytes from the socket `sock` to `fd` (at its position) in a thread
    of this upload's own; the count. Raises `ClientGone` (the client went away), `UploadStalled`
    (idle or too slow, by `pace`), what `check` raises, or the file's `OSError`. Cancelled, it
    stops the thread and waits for it (≤ STOP_CHECK_S) before re-raising: after this returns
    or raises, nothing touches `fd`."""
    return await in_own_thread(lambda stop: _move(sock, fd, count, pace, check, stop),
                               "upload-body")


async def tap_body(sock: int, count: int, pace: Pace, consume: Callable[[bytes], object]) -> int:
    """Read exactly `count` bytes from the socket `sock` in a thread of this upload's own,
    handing each piece to `consume` in that thread (a multipart form's parser, which writes
    the file part as it goes: one copy into Python, one into the page cache, as a plain
    socket-to-file loop; no event loop or HTTP parser per piece); the count. Raises as
    `splice_body`, and what `consume` raises; after it returns or raises, `consume` is not
    called again."""
    return await in_own_thread(lambda stop: _read(sock, count, pace, stop, consume),
                               "upload-body")
