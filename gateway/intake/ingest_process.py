"""Ingest in a child process: a big archive is unpacked away from the gateway's HTTP answers.

Unpacking (reading members, writing files, hashing them for the cache) is the gateway's
largest throughput work, and in-process it ran in a thread of the gateway: the event loop
that answers `/status` then waited for the GIL behind it (py-spy: the loop 76 % idle, the
ingest thread holding most samples, while `/status` p99 was 10× its p50). In a child process
it takes neither the gateway's GIL nor, at INGEST_NICE, a CPU the gateway wants.

`python -m gateway.intake.ingest_process PARENT_PID JOB_ID` runs `ingest_job` on the same
database and DATA_DIR; the gateway's settings arrive as one JSON line on stdin (the gateway
may have been built from a `Settings` object rather than the environment, and secrets never
go on a command line). The gateway starts one child per ingest whose upload has at least
INGEST_CHILD_MIN_BYTES (a child's start, ~1 s of CPU for its imports, is more than a small
archive's whole ingest costs) and keeps everything else: the job's lock (Postgres), the
decision to redo or give up, the scheduler's wake-up.

A child never outlives its gateway:
- the gateway stops it (SIGTERM, then SIGKILL after CHILD_STOP_WAIT_S) when the ingest is
  cancelled (`DELETE /jobs/{id}`, the gateway's shutdown);
- on Linux the kernel kills it the moment the gateway's thread that started it ends
  (`PR_SET_PDEATHSIG`), SIGKILL included; a gateway already gone before that was set up is
  seen by the parent pid check;
- everywhere, its stdin is the gateway's pipe: when it reads the end of it (the gateway died,
  whatever way), it exits.
A child killed mid-ingest leaves the job `ingesting`, exactly like a gateway killed
mid-ingest: the next start (or the gateway itself, for a child that died under a live
gateway) redoes it, at most MAX_RETRIES times (`gateway.state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from shared.children import EXIT_ORPHANED, child_env, die_with_parent
from shared.settings import Settings
from shared.timing import INGEST_CHILD_STOP_WAIT_S, INGEST_CHILD_TICK_S

__all__ = [
    "EXIT_CANCELLED",
    "MODULE",
    "IngestChildDied",
    "ingest_in_child",
    "main",
    "settings_from_payload",
    "settings_payload",
]

log = logging.getLogger("gateway.intake.ingest_process")

MODULE = "gateway.intake.ingest_process"
SERVICE = "gateway-ingest"
"""The child's log name: its own log files beside the gateway's (two processes must not
rotate one file)."""
EXIT_CANCELLED = 3
"""The child stopped on SIGTERM (its ingest cancelled, as an in-process one would be)."""
_ROOT = Path(__file__).resolve().parents[2]


class IngestChildDied(RuntimeError):
    """The child ended without finishing its ingest (killed, out of memory, a crash in a
    library): the job is left `ingesting`, as after a gateway crash."""

    def __init__(self, job_id: str, code: int) -> None:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        super().__init__(f"the ingest process of job {job_id} ended by {how}")
        self.job_id, self.code = job_id, code


def settings_payload(settings: Settings) -> bytes:
    """`settings` as one JSON line, secrets included (it goes down a pipe, not argv)."""
    data = settings.model_dump(mode="json")
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return json.dumps(data).encode() + b"\n"


def settings_from_payload(line: bytes) -> Settings:
    """The inverse of `settings_payload` (the values given win over the environment's)."""
    return Settings(**json.loads(line))


async def ingest_in_child(job_id: str, settings: Settings,
                          tick: Callable[[], None] | None = None) -> None:
    """Run job `job_id`'s ingest in a child process and wait for it; `tick()` is called every
    INGEST_CHILD_TICK_S meanwhile (the gateway's write signal: the child's writes are not
    the gateway's). Cancelling this stops the child; a child that ends any other way than
    by finishing raises `IngestChildDied`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", MODULE, str(os.getpid()), job_id,
        stdin=asyncio.subprocess.PIPE, env=child_env(), cwd=_ROOT)
    assert proc.stdin is not None
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(settings_payload(settings))  # a child dead already: its code
            await proc.stdin.drain()
        # stdin stays open: its end (this process gone) is the child's signal to stop
        while True:
            try:
                code = await asyncio.wait_for(proc.wait(), INGEST_CHILD_TICK_S)
                break
            except TimeoutError:
                if tick is not None:
                    tick()
    except BaseException:
        await _stop(proc)
        raise
    finally:
        proc.stdin.close()
    if tick is not None:
        tick()
    if code != 0:
        raise IngestChildDied(job_id, code)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the child cancels its ingest and exits), SIGKILL if it has not within
    CHILD_STOP_WAIT_S; waits for it either way, so no zombie is left."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), INGEST_CHILD_STOP_WAIT_S)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())


# --- the child ---------------------------------------------------------------------------------
def _read_line(fd: int) -> bytes:
    """One line from the raw descriptor `fd`, byte by byte (nothing read past it, so the
    watcher sees the pipe's end and nothing else)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        got = os.read(fd, 1)
        if not got:
            break
        line += got
    return bytes(line)


def _exit_at_end_of_stdin() -> None:
    """The gateway's pipe closed (it died, or it is done with us): stop at once."""
    # the raw descriptor, not sys.stdin: a thread blocked in a buffered read holds the
    # buffer's lock, which the interpreter's shutdown would wait for (and abort on)
    with contextlib.suppress(OSError):
        while os.read(0, 1 << 12):
            pass
    os._exit(EXIT_ORPHANED)


async def _run(job_id: str, settings: Settings) -> int:
    from gateway.db.database import Database
    from gateway.intake.ingest import ingest_job
    from shared.storage import Storage

    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    db = Database(settings.database)  # the gateway migrated it already
    try:
        await ingest_job(job_id, db, Storage.from_settings(settings), settings)
    except asyncio.CancelledError:
        log.info("ingest: job %s: stopped by the gateway", job_id)
        return EXIT_CANCELLED
    finally:
        await db.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[0].isdigit():
        print(f"usage: python -m {MODULE} PARENT_PID JOB_ID (settings on stdin)",
              file=sys.stderr)
        return 2
    die_with_parent(int(args[0]))
    settings = settings_from_payload(_read_line(0))

    from shared.logs import setup_logging
    from shared.priority import lower_priority

    lower_priority(settings.ingest_nice)  # before any thread: they inherit it
    threading.Thread(target=_exit_at_end_of_stdin, name="parent-watch", daemon=True).start()
    setup_logging(SERVICE, settings)
    return asyncio.run(_run(args[1], settings))


if __name__ == "__main__":
    sys.exit(main())
