"""A big finished job's zip made by worker processes, one per core, taking parts in turns.

A zip of tiny images costs a few microseconds of Python per member (open, check, read,
CRC-32, three records), and in the gateway's own zip thread all of it held the GIL that the
event loop sending the zip needs too: a 100 000-image job's zip came at ×0.61 of the speed
of reading its files (issue 17). Here the members' work runs in ZIP_PROCESSES child
processes, none of them sharing the gateway's GIL, and the gateway only passes on their
bytes.

The zip is cut into parts of about PART_BYTES by the rows' recorded sizes (count, bytes and
names' bytes of each task's outputs, as measured when it completed: a task's exact length in
the zip), so every part's offset is known before any file is read. The parts go to the
processes in turn, each process a few parts ahead, and are sent in order: while the gateway
sends one process's part, the others make their next. Each process keeps the central records
of its members, written with their final offsets, and sends them after its last part. The
gateway adds the report files and the end records (`ZipWriter.central`, `end_records`); a
zip's central directory may list its members in any order.

Every check of the zip made in one thread holds here too, per part: a task's files are
checked against its row before any of their bytes go out, and a part whose files do not come
to its length stops its process, which says why; the gateway then stops the zip short of its
Content-Length, never a zip of other contents under the announced length.

`python -m gateway.results.zip_processes PARENT_PID` is one process: on stdin a JSON line of
the job, then one JSON line per part; on stdout each part's bytes, then its central records.
It never outlives the gateway (`shared.children`), and imports nothing of the database or
the web framework: it starts in about a tenth of a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.errors import ClientGone
from gateway.results.members import OpenFolders
from gateway.results.zip_tasks import RowFiles, candidates_of, send_named, task_batches
from gateway.results.zipwriter import (
    CENTRAL_OVERHEAD,
    MEMBER_OVERHEAD,
    ZipSizeMismatch,
    ZipWriter,
    end_records,
)
from shared.children import ROOT, child_env, die_with_parent
from shared.heap import keep_heap
from shared.states import TaskState
from shared.storage import Storage, write_all
from shared.threads import CLIENT_ERRORS, STOP_CHECK_S

__all__ = ["MODULE", "PARTS_AHEAD", "PART_BYTES", "STOP_CHECK_S", "Job", "ProcessZip", "SizedRow",
           "ZipStopped", "main", "process_count"]

MODULE = "gateway.results.zip_processes"
PART_BYTES = 512 * 1024
"""A part's zip bytes, about: half a process's pipe (PIPE_BYTES), so a process can write a
whole part, and begin its next one, while the gateway still sends another's."""
PART_ROW_BYTES = 16 * 1024
"""A part's rows, as JSON, at most about this many bytes: with PARTS_AHEAD parts a process
never holds more than a pipe's default 64 KiB of rows unread, so the gateway never blocks
writing them (the one-KiB-name rows of a part of empty outputs included)."""
PARTS_AHEAD = 2
"""Parts given to each process ahead of the one being sent."""
PIPE_BYTES = 1024 * 1024
"""A process's stdout pipe is grown to this (Linux's default `pipe-max-size`)."""
_F_SETPIPE_SZ = 1031
_READ_BYTES = 1024 * 1024
_REJECTED = TaskState.REJECTED.value
_EXIT_FAILED = 1


class SizedRow(Protocol):
    """A finished task's row with its outputs' recorded sizes (`repo.OutputRow`)."""

    @property
    def path(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def output_files(self) -> int | None: ...

    @property
    def output_bytes(self) -> int | None: ...

    @property
    def output_name_bytes(self) -> int | None: ...


@dataclass(frozen=True)
class Job:
    """What a process needs to find a job's files: the local store's folder and the job's
    options that name its outputs."""

    root: Path
    job_id: str
    output: str
    models: Sequence[str]
    suffix: str

    def line(self) -> bytes:
        return json.dumps({"root": str(self.root), "job_id": self.job_id,
                           "output": self.output, "models": list(self.models),
                           "suffix": self.suffix}).encode() + b"\n"


class _Process:
    """One child: its pipes, and the central records' bytes its parts will make."""

    def __init__(self, job: Job) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, str(os.getpid())], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), cwd=ROOT)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.out = self.proc.stdout.fileno()
        with contextlib.suppress(OSError):  # a smaller pipe: the parts overlap less
            fcntl.fcntl(self.out, _F_SETPIPE_SZ, PIPE_BYTES)
        with contextlib.suppress(OSError):  # rows: room to spare past PART_ROW_BYTES
            fcntl.fcntl(self.stdin.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
        self.central = 0
        self.send(job.line())

    def send(self, line: bytes) -> None:
        """A line to its stdin; ZipSizeMismatch, with its reason, when it has died."""
        try:
            self.stdin.write(line)
            self.stdin.flush()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ZipSizeMismatch(f"a zip process stopped: {self.reason()}") from exc

    def read(self, n: int) -> Iterator[bytes]:
        """Exactly `n` bytes of its output, as they come; ZipSizeMismatch, with the process's
        reason, when it ends before them."""
        while n > 0:
            piece = os.read(self.out, min(n, _READ_BYTES))
            if not piece:
                raise ZipSizeMismatch(f"a zip process stopped: {self.reason()}")
            n -= len(piece)
            yield piece

    def reason(self) -> str:
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return "it closed its output"
        assert self.proc.stderr is not None
        said = self.proc.stderr.read(4000).decode(errors="replace").strip()
        return said or f"exit code {code}"

    def end(self) -> None:
        """No more parts: it sends its central records and exits."""
        with contextlib.suppress(BrokenPipeError):
            self.stdin.close()

    def finish(self) -> None:
        """It exited, and cleanly (ZipSizeMismatch if not)."""
        if self.proc.wait(30) != 0:
            raise ZipSizeMismatch(f"a zip process failed: {self.reason()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def process_count(setting: int) -> int:
    """ZIP_PROCESSES as a number of processes: 0 is one per CPU this process may use."""
    if setting:
        return setting
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _parts(rows: Iterable[SizedRow]) -> Iterator[tuple[list[RowFiles], int, int]]:
    """The rows in parts of about PART_BYTES: (rows, zip bytes, central records' bytes),
    from their recorded sizes. A rejected task has no members and is left out."""
    part: list[RowFiles] = []
    length = central = spelled = 0
    for t in rows:
        if t.state == _REJECTED:
            continue
        files, data, names = t.output_files, t.output_bytes, t.output_name_bytes
        if files is None or data is None or names is None:
            raise ZipSizeMismatch(f"{t.path}: no recorded sizes to place its files by")
        part.append(RowFiles(t.path, t.state, files, data))
        length += files * MEMBER_OVERHEAD + names + data
        central += files * CENTRAL_OVERHEAD + names
        spelled += len(t.path) + 32
        if length >= PART_BYTES or spelled >= PART_ROW_BYTES:
            yield part, length, central
            part, length, central, spelled = [], 0, 0, 0
    if part:
        yield part, length, central


class ProcessZip:
    """A finished job's zip, to be made by worker processes: `pieces` as bytes (a streamed
    response), or `splice_into` a socket (`shared.serve.SendTap`: the processes' pipes moved
    into it by the kernel, no byte through Python). The processes start with either, and
    are stopped when it ends, fails, or is abandoned."""

    def __init__(self, job: Job, rows: Iterable[SizedRow],
                 report: Sequence[tuple[Path, str]], count: int, central: int, end: int,
                 processes: int) -> None:
        """`rows`: the job's rows, every one with recorded sizes, in zip order; `report`:
        its report files. `count`, `central` and `end`: the whole zip's members, central
        records' bytes and members' end, as sized before the first byte (`ZipSizer`); the
        zip must meet them."""
        self.job, self.rows, self.report = job, rows, report
        self.count, self.central, self.end = count, central, end
        self.processes = processes

    def pieces(self) -> Generator[bytes, None, None]:
        """The zip's bytes (blocking: iterate it in a thread)."""
        for source in self._sources():
            if isinstance(source, bytes):
                yield source
            else:
                yield from source[0].read(source[1])

    def splice_into(self, sock: int, stop: threading.Event) -> int:
        """The zip written to the non-blocking socket `sock` (blocking: a thread of its own),
        the processes' parts spliced from their pipes; the bytes written. Waits for the
        client as long as it reads; stops at `stop` (checked every STOP_CHECK_S), raising
        `ZipStopped`; `ClientGone` when the client went away."""
        sent = 0
        nonblocking: set[int] = set()
        writable = select.poll()
        writable.register(sock, select.POLLOUT)
        for source in self._sources():
            if isinstance(source, bytes):
                _write_to(sock, source, writable, stop)
                sent += len(source)
                continue
            worker, n = source
            if worker.out not in nonblocking:
                os.set_blocking(worker.out, False)
                nonblocking.add(worker.out)
            _splice_to(worker, sock, n, writable, stop)
            sent += n
        return sent

    def _sources(self) -> Generator[bytes | tuple[_Process, int], None, None]:
        """The zip in order: (a process, the bytes of its next part or of its central
        records) to be read from its pipe, or bytes made here (the report files, the end
        records). Each part is taken whole before the generator goes on."""
        workers: list[_Process] = []
        try:
            workers = [_Process(self.job) for _ in range(self.processes)]
            queue: deque[tuple[_Process, int]] = deque()
            parts = _parts(self.rows)
            offset = 0
            turn = 0

            def give() -> bool:
                """The next part to the next process in turn; False when there is none."""
                nonlocal offset, turn
                part = next(parts, None)
                if part is None:
                    return False
                batch, length, records = part
                worker = workers[turn % len(workers)]
                turn += 1
                worker.send(json.dumps({"start": offset, "end": offset + length,
                                        "rows": batch}).encode() + b"\n")
                worker.central += records
                queue.append((worker, length))
                offset += length
                return True

            while len(queue) < len(workers) * PARTS_AHEAD and give():
                pass
            while queue:
                yield queue.popleft()
                give()
            for worker in workers:
                worker.end()
            tail = ZipWriter()
            try:
                tail.offset = offset
                yield from send_named(tail, self.report, self.end)
                if tail.offset != self.end:
                    raise ZipSizeMismatch(f"the zip's members came to {tail.offset} bytes, "
                                          f"{self.end} announced: a file is gone or changed")
                if sum(w.central for w in workers) + tail.central_size != self.central:
                    raise ZipSizeMismatch("the zip's central directory would not be the one "
                                          "announced: a task's record changed")
                for worker in workers:
                    yield worker, worker.central
                yield b"".join(tail.central())
            finally:
                tail.close()
            for worker in workers:
                worker.finish()
            yield end_records(self.count, self.central, self.end)
        finally:
            for worker in workers:
                worker.stop()


def _stop_check_ms() -> int:
    return int(STOP_CHECK_S * 1000)


class ZipStopped(Exception):
    """The download was cancelled (the gateway stopping, the request's task cancelled)."""


def _splice_to(worker: _Process, sock: int, n: int, writable: select.poll,
               stop: threading.Event) -> None:
    """Exactly `n` bytes of `worker`'s output (a non-blocking pipe) into `sock`, in the
    kernel (`splice`)."""
    readable = select.poll()
    readable.register(worker.out, select.POLLIN)
    while n > 0:
        if stop.is_set():
            raise ZipStopped
        try:
            moved = os.splice(worker.out, sock, min(n, PIPE_BYTES),
                              flags=os.SPLICE_F_MOVE | os.SPLICE_F_MORE)
        except BlockingIOError:
            if readable.poll(0):  # the pipe holds bytes: the socket is full
                writable.poll(_stop_check_ms())
            else:  # the process is still making them
                readable.poll(_stop_check_ms())
            continue
        except OSError as exc:
            if exc.errno in CLIENT_ERRORS:
                raise ClientGone() from exc
            raise
        if moved == 0:
            raise ZipSizeMismatch(f"a zip process stopped: {worker.reason()}")
        n -= moved


def _write_to(sock: int, data: bytes, writable: select.poll, stop: threading.Event) -> None:
    """`data` into the non-blocking socket `sock`."""
    view = memoryview(data)
    while view:
        if stop.is_set():
            raise ZipStopped
        try:
            view = view[os.write(sock, view):]
        except BlockingIOError:
            writable.poll(_stop_check_ms())
        except OSError as exc:
            if exc.errno in CLIENT_ERRORS:
                raise ClientGone() from exc
            raise


def _serve(lines: Iterator[bytes], out: int) -> None:
    """One process's work: the job's line, then each part's files into the zip."""
    job = json.loads(next(lines))
    folders = OpenFolders(Storage(Path(job["root"])))
    writer = ZipWriter()
    try:
        candidates = candidates_of(job["job_id"], job["output"], job["models"], job["suffix"])
        for line in lines:
            part = json.loads(line)
            start, end = int(part["start"]), int(part["end"])
            writer.offset = start  # its members' records carry their offsets in the zip
            rows = [RowFiles(*r) for r in part["rows"]]
            for batch in task_batches(writer, folders, candidates, rows, end):
                write_all(out, batch)  # as they are: no join, no copy here
            if writer.offset != end:
                raise ZipSizeMismatch(f"a part's members came to {writer.offset - start} "
                                      f"bytes, {end - start} recorded: a file is gone or "
                                      "changed")
        for block in writer.central():
            write_all(out, [block])
    finally:
        folders.close()
        writer.close()


def main(argv: Sequence[str]) -> int:
    """`python -m gateway.results.zip_processes PARENT_PID`."""
    die_with_parent(int(argv[0]))
    keep_heap()  # each part's pieces reuse the last one's pages
    try:
        _serve(iter(sys.stdin.buffer), sys.stdout.fileno())
    except BrokenPipeError:  # the gateway stopped reading: the download is gone
        return _EXIT_FAILED
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"{exc}\n")
        return _EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
