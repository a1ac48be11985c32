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
import subprocess
import sys
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.results.members import OpenFolders
from gateway.results.zip_tasks import RowFiles, candidates_of, send_named, task_pieces
from gateway.results.zipwriter import (
    CENTRAL_OVERHEAD,
    MEMBER_OVERHEAD,
    ZipSizeMismatch,
    ZipWriter,
    end_records,
)
from shared.children import ROOT, child_env, die_with_parent
from shared.states import TaskState
from shared.storage import Storage

__all__ = ["MODULE", "PARTS_AHEAD", "PART_BYTES", "Job", "SizedRow", "main", "process_count",
           "zip_in_processes"]

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
        self.central = 0
        self.send(job.line())

    def send(self, line: bytes) -> None:
        self.stdin.write(line)
        self.stdin.flush()

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


def zip_in_processes(job: Job, rows: Iterable[SizedRow], report: Sequence[tuple[Path, str]],
                     count: int, central: int, end: int, processes: int
                     ) -> Generator[bytes, None, None]:
    """The zip of a finished job's `rows` (every one with recorded sizes, in zip order) and
    its `report` files, made by `processes` worker processes (blocking: iterate it in a
    thread). `count`, `central` and `end`: the whole zip's members, central records' bytes
    and members' end, as sized before the first byte (`ZipSizer`); the zip must meet them."""
    workers: list[_Process] = []
    try:
        workers = [_Process(job) for _ in range(processes)]
        queue: deque[tuple[_Process, int]] = deque()
        parts = _parts(rows)
        offset = 0
        turn = 0

        def give() -> bool:
            """The next part to the next process in turn; False when there is none."""
            nonlocal offset, turn
            part = next(parts, None)
            if part is None:
                return False
            batch, length, records = part
            worker = workers[turn % processes]
            turn += 1
            worker.send(json.dumps({"start": offset, "end": offset + length,
                                    "rows": batch}).encode() + b"\n")
            worker.central += records
            queue.append((worker, length))
            offset += length
            return True

        while len(queue) < processes * PARTS_AHEAD and give():
            pass
        while queue:
            worker, length = queue.popleft()
            yield from worker.read(length)
            give()
        for worker in workers:
            worker.end()
        tail = ZipWriter()
        try:
            tail.offset = offset
            yield from send_named(tail, report, end)
            if tail.offset != end:
                raise ZipSizeMismatch(f"the zip's members came to {tail.offset} bytes, "
                                      f"{end} announced: a file is gone or changed")
            if sum(w.central for w in workers) + tail.central_size != central:
                raise ZipSizeMismatch("the zip's central directory would not be the one "
                                      "announced: a task's record changed")
            for worker in workers:
                yield from worker.read(worker.central)
            yield from tail.central()
        finally:
            tail.close()
        for worker in workers:
            worker.finish()
        yield end_records(count, central, end)
    finally:
        for worker in workers:
            worker.stop()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
            for piece in task_pieces(writer, folders, candidates, rows, end):
                _write_all(out, piece)
            if writer.offset != end:
                raise ZipSizeMismatch(f"a part's members came to {writer.offset - start} "
                                      f"bytes, {end - start} recorded: a file is gone or "
                                      "changed")
        for block in writer.central():
            _write_all(out, block)
    finally:
        folders.close()
        writer.close()


def main(argv: Sequence[str]) -> int:
    """`python -m gateway.results.zip_processes PARENT_PID`."""
    die_with_parent(int(argv[0]))
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
