"""The client commands of `mattepipe` (run, upload, wait, download, status, jobs, cancel) as
functions that answer an exit code; `cli.py` only declares their options.

Exit codes, the same for every command:
0 done (the job completed); 1 the job failed or was cancelled (its reason is printed);
2 bad usage or a local problem (no such folder, a file changed during the upload);
3 the job completed with errors: the result is there, but some images were rejected or
failed for good (counts printed), so scripts notice; 4 the gateway refused or could not be
reached (its detail printed); 130 interrupted: the same command again resumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from mattepipe.cli.views import ProcessingBar, counts_line, jobs_table, status_table, transfer_bar
from mattepipe.client.errors import GatewayError, ServerError
from mattepipe.client.gateway import GatewayClient
from mattepipe.client.packing import open_source
from mattepipe.client.resume import StateStore
from mattepipe.client.tus import UPLOAD_CHUNK, UploadStopped
from mattepipe.client.upload import JobOptions, UploadEvents, UploadOutcome, upload_source
from shared.responses import JobStatus, PublicModel
from shared.states import JobState
from shared.timing import FOLLOW_OUTAGE_S, STATUS_POLL_S

__all__ = ["Conn", "ExitCode", "cancel_cmd", "download_cmd", "err_console", "exit_for_state",
           "fail", "jobs_cmd", "run_cmd", "status_cmd", "upload_cmd", "wait_cmd"]


class ExitCode(IntEnum):
    OK = 0
    JOB_FAILED = 1
    USAGE = 2
    WITH_ERRORS = 3
    GATEWAY = 4
    INTERRUPTED = 130


def exit_for_state(state: str | None) -> ExitCode:
    if state == JobState.COMPLETED:
        return ExitCode.OK
    if state == JobState.COMPLETED_WITH_ERRORS:
        return ExitCode.WITH_ERRORS
    return ExitCode.JOB_FAILED


@dataclass(frozen=True)
class Conn:
    server: str
    api_key: str | None = None

    def client(self) -> GatewayClient:
        return GatewayClient(self.server, self.api_key)


def err_console() -> Console:
    # soft_wrap: a message line stays one line (a job id is never broken), the terminal wraps
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(console: Console, code: ExitCode, msg: str) -> int:
    console.print(f"[red]error:[/red] {escape(msg)}")
    return int(code)


def _guarded(console: Console, resume_hint: bool, work: Callable[[], int]) -> int:
    """Runs `work()`; turns the ways it can end into a message and an exit code."""
    hint = "; the same command again resumes" if resume_hint else ""
    try:
        return int(work())
    except ServerError as exc:
        return fail(console, ExitCode.GATEWAY, f"{exc}{hint}")
    except UploadStopped as exc:
        console.print(f"[yellow]{escape(str(exc))}[/yellow]{hint}")
        return int(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]{hint}")
        return int(ExitCode.INTERRUPTED)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        return fail(console, ExitCode.USAGE, str(exc))


def _upload(client: GatewayClient, console: Console, path: Path, options: JobOptions,
            store: StateStore, chunk: int, stop_after: int | None) -> UploadOutcome:
    with console.status(f"reading {escape(str(path))} …"):
        source = open_source(path)
    what = f"{len(source.members)} files as {source.name}" if source.is_folder else source.name
    with transfer_bar(console) as bar:
        task = bar.add_task(f"uploading {escape(what)}", total=source.size, start=False)

        def started(total: int, offset: int, resumable: bool) -> None:
            bar.update(task, total=total, completed=offset)
            bar.start_task(task)

        events = UploadEvents(started=started,
                              progress=lambda done: bar.update(task, completed=done),
                              note=lambda msg: bar.console.print(escape(msg)))
        outcome = upload_source(client, source, options, store, events, chunk, stop_after)
    if not outcome.existing_job:
        resumed = f", resumed at byte {outcome.resumed_from}" if outcome.resumed_from else ""
        console.print(f"uploaded {outcome.total} bytes: sent {outcome.sent} bytes this time"
                      f"{resumed} → job {outcome.job.job_id}")
    return outcome


def _follow(client: GatewayClient, console: Console, job_id: str,
            poll_s: float) -> JobStatus:
    """The processing bar until the job ends. A gateway that restarts or is briefly
    unreachable (no answer, 5xx) is waited for up to FOLLOW_OUTAGE_S, so hours of following
    do not end on one hiccup."""
    down_since: float | None = None

    def seen(st: JobStatus) -> None:
        nonlocal down_since
        down_since = None
        bar.update(st)

    with ProcessingBar(console) as bar:
        while True:
            try:
                return client.wait(job_id, seen, poll_s=poll_s)
            except GatewayError as exc:
                if 0 < exc.status < 500:
                    raise
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                    bar.progress.console.print(
                        f"[yellow]gateway unavailable ({escape(exc.detail)}); waiting for it"
                        "[/yellow]")
                elif now - down_since > FOLLOW_OUTAGE_S:
                    raise
                time.sleep(max(poll_s, 1.0))


def _download(client: GatewayClient, console: Console, job_id: str, out: Path,
              partial: bool = False) -> Path:
    with transfer_bar(console) as bar:
        task = bar.add_task("downloading", total=None)
        client.download(job_id, out, lambda done, total: bar.update(task, completed=done,
                                                                    total=total),
                        partial=partial)
    return out


def _finish(console: Console, final: JobStatus, out: Path | None) -> int:
    """Prints how the job ended and answers its exit code."""
    state = final.state
    code = exit_for_state(state)
    colour = {ExitCode.OK: "green", ExitCode.WITH_ERRORS: "yellow"}.get(code, "red")
    console.print(f"job {final.job_id}: [{colour}]{state}[/{colour}] · "
                  f"{counts_line(final)}")
    if final.error:
        console.print(f"reason: {escape(final.error)}")
    if out is not None:
        console.print(f"result → [bold]{escape(str(out.resolve()))}")
    return int(code)


def _json(answer: PublicModel) -> str:
    """The gateway's answer as it sent it (the fields it sent, unknown ones included)."""
    return json.dumps(answer.model_dump(mode="json", exclude_unset=True), indent=2)


def run_cmd(conn: Conn, path: Path, out: Path, options: JobOptions, store: StateStore,
            chunk: int = UPLOAD_CHUNK, stop_after: int | None = None,
            poll_s: float = STATUS_POLL_S) -> int:
    """Upload (resuming), follow the job, download its zip; the state goes once it is done."""
    console = err_console()

    def work() -> int:
        with conn.client() as client:
            outcome = _upload(client, console, path, options, store, chunk, stop_after)
            job_id = outcome.job.job_id
            final = _follow(client, console, job_id, poll_s)
            state = final.state
            if state in (JobState.FAILED, JobState.CANCELLED):
                store.drop(outcome.key)
                return _finish(console, final, None)
            _download(client, console, job_id, out)
            store.drop(outcome.key)
            return _finish(console, final, out)

    return _guarded(console, True, work)


def upload_cmd(conn: Conn, path: Path, options: JobOptions, store: StateStore,
               chunk: int = UPLOAD_CHUNK, stop_after: int | None = None) -> int:
    """Upload (resuming) and create the job; prints its id on stdout for scripts."""
    console = err_console()

    def work() -> int:
        with conn.client() as client:
            outcome = _upload(client, console, path, options, store, chunk, stop_after)
        store.drop(outcome.key)
        Console(highlight=False, soft_wrap=True).print(outcome.job.job_id)
        return ExitCode.OK

    return _guarded(console, True, work)


def wait_cmd(conn: Conn, job_id: str, out: Path | None = None,
             poll_s: float = STATUS_POLL_S) -> int:
    console = err_console()

    def work() -> int:
        with conn.client() as client:
            final = _follow(client, console, job_id, poll_s)
            if out is not None and final.state not in (JobState.FAILED,
                                                              JobState.CANCELLED):
                _download(client, console, job_id, out)
                return _finish(console, final, out)
            return _finish(console, final, None)

    return _guarded(console, False, work)


def download_cmd(conn: Conn, job_id: str, out: Path, partial: bool = False) -> int:
    console = err_console()

    def work() -> int:
        with conn.client() as client:
            _download(client, console, job_id, out, partial)
        console.print(f"{job_id} → [bold]{escape(str(out.resolve()))}")
        return ExitCode.OK

    return _guarded(console, False, work)


def status_cmd(conn: Conn, job_id: str, as_json: bool = False) -> int:
    console = err_console()

    def work() -> int:
        with conn.client() as client:
            st = client.status(job_id)
        stdout = Console(highlight=False)
        if as_json:
            stdout.out(_json(st))
        else:
            stdout.print(status_table(st))
        return ExitCode.OK

    return _guarded(console, False, work)


def jobs_cmd(conn: Conn, limit: int = 50, offset: int = 0, as_json: bool = False) -> int:
    console = err_console()

    def work() -> int:
        with conn.client() as client:
            page = client.jobs(limit, offset)
        stdout = Console(highlight=False)
        if as_json:
            stdout.out(_json(page))
        else:
            stdout.print(jobs_table(page.jobs, page.total))
        return ExitCode.OK

    return _guarded(console, False, work)


def cancel_cmd(conn: Conn, job_id: str) -> int:
    console = err_console()

    def work() -> int:
        with conn.client() as client:
            st = client.cancel(job_id)
        console.print(f"job {job_id}: {st.state} (its files are removed)")
        return ExitCode.OK

    return _guarded(console, False, work)

