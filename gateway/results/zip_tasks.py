"""A finished job's task rows into its zip: each task's files found, opened, checked, written.

A task's zip members are fixed by its path and its job's options (`candidates_of`): one
cut-out per model (`.alpha.png` beside each with output=both) and one comparison sheet. A
local zip opens them in their folders (`OpenFolders`), checks the opened files against the
count and bytes recorded in the task's row when it completed (`check_row`), and writes each
small one read whole (`task_pieces`). The report files, named by path, go in by `send_named`.

Light on purpose: it imports nothing of the database or the web framework, so the zip's
worker processes (`gateway.results.zip_processes`) start in a tenth of a second and run the
very code the gateway's own zip thread runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, Protocol

from gateway.results.members import OpenFolders, open_plain
from gateway.results.zipwriter import ZipSizeMismatch, ZipWriter
from shared.limits import ZIP_CHUNK_BYTES
from shared.states import TaskState
from shared.storage import COMPARE_SUFFIX, FINAL_RESULTS, MATTING_OUTPUT, Storage, model_output_rel

__all__ = ["READ_BLOCK_BYTES", "Candidates", "Opened", "RowFiles", "TaskRow", "add_opened",
           "blocks", "candidates_of", "check_row", "open_named", "send_named", "send_opened",
           "task_batches", "task_candidates", "task_pieces"]

READ_BLOCK_BYTES = 1024 * 1024
"""A member's file is read in blocks of this size while it is sent (a video is never held
whole); one up to this size is read whole in one `read`."""

_REJECTED = TaskState.REJECTED.value

Candidates = Callable[[str], Sequence[tuple[str, str]]]
"""A task's path to the (storage key, zip name) of every output it may have, in zip order."""

Opened = tuple[int, os.stat_result, str]
"""A member opened for the zip: its descriptor, its `fstat`, its name in the zip."""


class TaskRow(Protocol):
    """What the zip reads of a task: a `Task`, a finished job's `repo.OutputRow`, or a
    worker process's `RowFiles`."""

    @property
    def path(self) -> str: ...

    @property
    def state(self) -> str: ...


class RowFiles(NamedTuple):
    """A task row as a zip's worker process gets it: path, state, and its outputs' count
    and bytes as recorded when it completed."""

    path: str
    state: str
    output_files: int | None
    output_bytes: int | None


def task_candidates(job_id: str, output: str, models: Sequence[str], path: str,
                    suffix: str) -> list[tuple[str, str]]:
    """(storage key, zip name) of every output the task may have, in zip order: the first
    model's cut-out under docs/DESIGN.md's name ("Public API"), the others as
    `<x>.<model>.png` (`shared.storage.model_output_rel`), `<x>.alpha.png` beside each with
    output=both, then the comparison sheet. `suffix`: the job's cut-out format."""
    return list(candidates_of(job_id, output, models, suffix)(path))


def candidates_of(job_id: str, output: str, models: Sequence[str], suffix: str
                  ) -> Candidates:
    """`task_candidates` of one job's options, as a function of the task's path: what does
    not depend on the path is worked out once (a download asks for every task's)."""
    cut_rel, cut_name = f"{MATTING_OUTPUT}/{job_id}/", f"{MATTING_OUTPUT}/"
    sheet_rel, sheet_name = f"{FINAL_RESULTS}/{job_id}/", f"{FINAL_RESULTS}/"
    stem_path = Storage.stem_path
    if len(models) <= 1 and output != "both":  # one cut-out, under docs/DESIGN.md's name

        def one_cutout(path: str) -> tuple[tuple[str, str], tuple[str, str]]:
            stem = stem_path(path)
            cut, sheet = stem + suffix, stem + COMPARE_SUFFIX
            return (cut_rel + cut, cut_name + cut), (sheet_rel + sheet, sheet_name + sheet)

        return one_cutout
    names = list(models) or [""]  # one unnamed model: docs/DESIGN.md's names
    kinds = (False, True) if output == "both" else (False,)

    def several(path: str) -> list[tuple[str, str]]:
        stem = stem_path(path)
        first_rel, first_name = cut_rel + stem + suffix, cut_name + stem + suffix
        out = [(model_output_rel(first_rel, model, i, alpha),
                model_output_rel(first_name, model, i, alpha))
               for i, model in enumerate(names) for alpha in kinds]
        out.append((sheet_rel + stem + COMPARE_SUFFIX, sheet_name + stem + COMPARE_SUFFIX))
        return out

    return several


def open_named(member: str | os.PathLike[str], name: str) -> tuple[int, os.stat_result]:
    """`members.open_plain` of a member the zip counts on: FileNotFoundError when it is no
    longer a plain file (gone, a symlink, a FIFO: never followed, never waited on)."""
    found = open_plain(member)
    if found is None:
        raise FileNotFoundError(f"{name}: no longer a plain file")
    return found


def blocks(fd: int, size: int) -> Iterator[bytes]:
    """Up to `size` bytes of `fd`, READ_BLOCK_BYTES at a time."""
    left = size
    while left > 0 and (block := os.read(fd, min(READ_BLOCK_BYTES, left))):
        left -= len(block)
        yield block


def check_row(t: TaskRow | None, files: int, total: int) -> None:
    """A task's files as found now against its row's record (count and summed bytes); a row
    without one, or None for the report files, is checked by the zip's end alone."""
    want = (getattr(t, "output_files", None), getattr(t, "output_bytes", None))
    if t is not None and want[0] is not None and want != (files, total):
        raise ZipSizeMismatch(f"{t.path}: {files} files of {total} bytes, {want[0]} of "
                              f"{want[1]} when it completed: its outputs changed since")


def add_opened(writer: ZipWriter, opened: Sequence[Opened], t: TaskRow, end: int,
               out: list[bytes]) -> bool:
    """`send_opened` of a task whose files are all small (up to READ_BLOCK_BYTES, a job's
    outputs): the task checked against its row, then each file read whole at once and
    appended to `out` (`ZipWriter.wholes`): no generator and no piece of its own per member,
    the per-member work of a zip of tiny images (issue 17). False, nothing written, when one
    file is bigger (`send_opened` streams it)."""
    total = 0
    for _, st, _ in opened:
        if st.st_size > READ_BLOCK_BYTES:
            return False
        total += st.st_size
    check_row(t, len(opened), total)
    if writer.offset + total > end:
        raise ZipSizeMismatch(f"{t.path}: the zip would pass its announced length")
    read: list[tuple[str, bytes, float]] = []
    for fd, st, name in opened:
        data = os.read(fd, st.st_size)
        if len(data) != st.st_size:
            raise ZipSizeMismatch(f"{name}: {len(data)} bytes read, {st.st_size} a moment "
                                  "before: it changed while the zip was sent")
        read.append((name, data, st.st_mtime))
    writer.wholes(read, out)
    return True


def send_opened(writer: ZipWriter, opened: Sequence[Opened], t: TaskRow | None, end: int
                ) -> Iterator[bytes]:
    """One task's opened files into the zip (the caller closes them), after their count and
    summed size (their `fstat`s) are checked against the task's recorded ones (`t`; a row
    without them, or None for the report files: checked by `end` alone)."""
    check_row(t, len(opened), sum(st.st_size for _, st, _ in opened))
    for fd, st, name in opened:
        size = st.st_size
        if size <= READ_BLOCK_BYTES:
            piece = writer.whole(name, size, os.read(fd, size), st.st_mtime)
            if writer.offset > end:
                raise ZipSizeMismatch(f"{name}: the zip would pass its announced length")
            yield piece
        else:
            if writer.offset + size > end:
                raise ZipSizeMismatch(f"{name}: the zip would pass its announced length")
            yield from writer.member(name, size, blocks(fd, size), st.st_mtime)


def send_named(writer: ZipWriter, files: Iterable[tuple[str | os.PathLike[str], str]],
               end: int) -> Iterator[bytes]:
    """`send_opened` of local files named by path (the report files), each opened without
    following a symlink."""
    opened: list[Opened] = []
    try:
        for member, name in files:
            fd, st = open_named(member, name)
            opened.append((fd, st, name))
        yield from send_opened(writer, opened, None, end)
    finally:
        for fd, _, _ in opened:
            os.close(fd)


def task_pieces(writer: ZipWriter, folders: OpenFolders, candidates: Candidates,
                rows: Iterable[TaskRow], end: int) -> Iterator[bytes]:
    """The rows' files into the zip, in pieces of about ZIP_CHUNK_BYTES (blocking).

    Each task's files are opened in their folders (`OpenFolders`: one path component looked
    up per member, no listing) and checked against its row before any of their bytes go out
    (`add_opened`, `send_opened`); no member may pass `end`, the announced end of these
    members. A rejected task has no outputs: files under its name are another's."""
    for batch in task_batches(writer, folders, candidates, rows, end):
        yield b"".join(batch)


def task_batches(writer: ZipWriter, folders: OpenFolders, candidates: Candidates,
                 rows: Iterable[TaskRow], end: int) -> Iterator[list[bytes]]:
    """`task_pieces` as the pieces of each ~ZIP_CHUNK_BYTES (headers, data, descriptors),
    unjoined: for a writer that hands them to the kernel as they are (`os.writev`). Each
    list is the caller's until it asks for the next."""
    open_member = folders.open
    out: list[bytes] = []
    opened: list[Opened] = []
    flushed = writer.offset
    for t in rows:
        if t.state == _REJECTED:
            continue
        try:
            for key, name in candidates(t.path):
                if (found := open_member(key)) is not None:
                    opened.append((found[0], found[1], name))
            if add_opened(writer, opened, t, end, out):
                if writer.offset - flushed >= ZIP_CHUNK_BYTES:
                    yield out
                    out = []
                    flushed = writer.offset
                continue
            if out:  # a big file: what is gathered goes first, then it is streamed
                yield out
                out = []
            for piece in send_opened(writer, opened, t, end):
                yield [piece]
            flushed = writer.offset
        finally:
            for fd, _, _ in opened:
                os.close(fd)
            opened.clear()
    if out:
        yield out
