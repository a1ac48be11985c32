"""Which outputs a task has in its job's zip, and their sizes as recorded when it completed.

A task's zip members are fixed by its path and its job's options
(`gateway.results.zip_tasks.task_candidates`): one cut-out per model (`.alpha.png` beside
each with output=both) and one comparison sheet.
When a task completes, the gateway measures the ones that exist (`measure`: an `lstat` each,
in a thread) and records how many there are, their sizes and their names' lengths in the
task's row (`OutputSizes`, columns `output_files`, `output_bytes`, `output_name_bytes`).
A finished job's zip is then sized by one aggregate query instead of a `stat` per file
before its first byte (issue 17; README, "The download, third pass"), and each task's files
are checked against its row as they are sent (`gateway.results.zip_stream`).

The measure is taken at completion, after the comparison stage, when every output of the
task is written: a retry rewrites the files before that, and a task whose cut-out came from
the content-hash cache is measured like any other (the reused file is its own now).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import NamedTuple

from gateway.db.transitions import OUTPUT_SIZES_KEY, Claimed
from gateway.results.zip_tasks import task_candidates
from shared.schemas import StageResult
from shared.storage import PathOutsideDataDir, Storage

__all__ = ["OUTPUT_SIZES_KEY", "OutputSizes", "measure", "note_sizes"]


class OutputSizes(NamedTuple):
    """A task's zip members as recorded: count, bytes, and names' UTF-8 bytes, summed."""

    files: int
    bytes: int
    name_bytes: int


def measure(storage: Storage, job_id: str, output: str, models: Sequence[str], path: str,
            suffix: str) -> OutputSizes | None:
    """The task's outputs that exist now, as plain files (an `lstat` each: a symlink is
    not one, as the zip's `JobFinder` does not list it); None on S3 (its zip is sized
    from the store's listing) or when a name cannot be a file here."""
    if not storage.is_local:
        return None
    files = size = name_bytes = 0
    try:
        for rel, name in task_candidates(job_id, output, models, path, suffix):
            folder, _, file_name = rel.rpartition("/")
            where = storage.objects.local_path(folder)  # resolved as `JobFinder` does: the
            if where is None:                             # folder, never the file itself
                return None
            try:
                st = os.lstat(where / file_name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
                name_bytes += len(name.encode())
    except (PathOutsideDataDir, OSError, ValueError):
        return None
    return OutputSizes(files, size, name_bytes)


def note_sizes(storage: Storage, done: Sequence[tuple[Claimed, StageResult | None]]) -> None:
    """For the scheduler, in a thread, once the comparison stage has answered: each task
    that succeeded measured (`measure`) into its result's `extra`, where
    `gateway.db.transitions.record_success` takes it from (None there: unmeasured)."""
    for c, result in done:
        if result is not None:
            result.extra[OUTPUT_SIZES_KEY] = measure(storage, c.job_id, c.output, c.models,
                                                     c.path, c.options.suffix)
