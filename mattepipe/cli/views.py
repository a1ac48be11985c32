"""How the CLI shows things: transfer bars with speed, the processing bar with the server's
ETA, the jobs table and the status panel. Kept apart from the flows so they stay testable
without a terminal."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from shared.responses import JobStatus, JobSummary

__all__ = ["ProcessingBar", "counts_line", "fmt_duration", "fmt_time", "jobs_table",
           "status_table", "transfer_bar"]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "–"


def transfer_bar(console: Console) -> Progress:
    """Bytes, speed and time left, for uploads and downloads."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                    transient=False)


def counts_line(st: JobSummary) -> str:
    parts = [f"{st.completed} completed", f"{st.failed} failed", f"{st.rejected} rejected"]
    return f"{', '.join(parts)} of {st.total}"


class ProcessingBar:
    """Images done of total, state, throughput and the ETA the server computes (`eta_s`)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("[bold]processing"), BarColumn(),
                                 MofNCompleteColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=console)
        self.task: TaskID | None = None

    def __enter__(self) -> ProcessingBar:
        self.progress.__enter__()
        self.task = self.progress.add_task("processing", total=None, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    @staticmethod
    def info(st: JobSummary) -> str:
        bits = [st.state or "?"]
        if st.throughput_per_s:
            bits.append(f"{st.throughput_per_s:.2f} img/s")
        bits.append(f"ETA {fmt_duration(st.eta_s)}")
        if st.retrying:
            bits.append(f"{st.retrying} retrying")
        return " · ".join(bits)

    def update(self, st: JobSummary) -> None:
        assert self.task is not None
        done = st.completed + st.failed + st.rejected
        self.progress.update(self.task, total=st.total or None, completed=done,
                             info=escape(self.info(st)))


def jobs_table(jobs: list[JobSummary], total: int | None = None) -> Table:
    title = f"jobs ({len(jobs)} of {total})" if total is not None else "jobs"
    table = Table(title=title)
    for col, kw in (("job", {"no_wrap": True}), ("state", {}), ("progress", {"justify": "right"}),
                    ("done", {"justify": "right"}), ("failed", {"justify": "right"}),
                    ("rejected", {"justify": "right"}), ("model", {}), ("file", {}),
                    ("created", {})):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    for j in jobs:
        table.add_row(escape(j.job_id), escape(j.state), f"{j.progress:.1f}%",
                      f"{j.completed}/{j.total}", str(j.failed), str(j.rejected),
                      escape(j.model), escape(j.filename), fmt_time(j.created_at))
    return table


def status_table(st: JobStatus) -> Table:
    table = Table(title=f"job {escape(st.job_id)}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    rows: list[tuple[str, object]] = [
        ("state", st.state), ("progress", f"{st.progress:.1f}%"), ("images", counts_line(st)),
        ("retrying", st.retrying), ("throughput", f"{st.throughput_per_s:.2f} images/s"),
        ("ETA", fmt_duration(st.eta_s)), ("model", st.model), ("output", st.output),
        ("file", st.filename), ("created", fmt_time(st.created_at)),
        ("finished", fmt_time(st.finished_at)), ("error", st.error)]
    for key, value in rows:
        if value not in (None, ""):
            table.add_row(key, escape(str(value)))
    counts = {k: v for k, v in st.counts.items() if v}
    if counts:
        table.add_row("tasks", escape(", ".join(f"{k} {v}" for k, v in counts.items())))
    return table
