"""How the CLI shows things: transfer bars with speed, the processing bar with the server's
ETA, the jobs table and the status panel. Kept apart from the flows so they stay testable
without a terminal."""

from __future__ import annotations

import time
from typing import Any

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


def counts_line(st: dict[str, Any]) -> str:
    parts = [f"{st.get('completed', 0)} completed", f"{st.get('failed', 0)} failed",
             f"{st.get('rejected', 0)} rejected"]
    return f"{', '.join(parts)} of {st.get('total', 0)}"


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
    def info(st: dict[str, Any]) -> str:
        bits = [str(st.get("state", "?"))]
        if st.get("throughput_per_s"):
            bits.append(f"{float(st['throughput_per_s']):.2f} img/s")
        bits.append(f"ETA {fmt_duration(st.get('eta_s'))}")
        if st.get("retrying"):
            bits.append(f"{st['retrying']} retrying")
        return " · ".join(bits)

    def update(self, st: dict[str, Any]) -> None:
        assert self.task is not None
        done = int(st.get("completed", 0)) + int(st.get("failed", 0)) \
            + int(st.get("rejected", 0))
        self.progress.update(self.task, total=st.get("total") or None, completed=done,
                             info=escape(self.info(st)))


def jobs_table(jobs: list[dict[str, Any]], total: int | None = None) -> Table:
    title = f"jobs ({len(jobs)} of {total})" if total is not None else "jobs"
    table = Table(title=title)
    for col, kw in (("job", {"no_wrap": True}), ("state", {}), ("progress", {"justify": "right"}),
                    ("done", {"justify": "right"}), ("failed", {"justify": "right"}),
                    ("rejected", {"justify": "right"}), ("model", {}), ("file", {}),
                    ("created", {})):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    for j in jobs:
        table.add_row(escape(str(j.get("job_id"))), escape(str(j.get("state"))),
                      f"{float(j.get('progress') or 0):.1f}%",
                      f"{j.get('completed', 0)}/{j.get('total', 0)}", str(j.get("failed", 0)),
                      str(j.get("rejected", 0)), escape(str(j.get("model") or "")),
                      escape(str(j.get("filename") or "")), fmt_time(j.get("created_at")))
    return table


def status_table(st: dict[str, Any]) -> Table:
    table = Table(title=f"job {escape(str(st.get('job_id')))}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    rows = [("state", st.get("state")), ("progress", f"{float(st.get('progress') or 0):.1f}%"),
            ("images", counts_line(st)), ("retrying", st.get("retrying")),
            ("throughput", f"{float(st.get('throughput_per_s') or 0):.2f} images/s"),
            ("ETA", fmt_duration(st.get("eta_s"))), ("model", st.get("model")),
            ("output", st.get("output")), ("file", st.get("filename")),
            ("created", fmt_time(st.get("created_at"))),
            ("finished", fmt_time(st.get("finished_at"))), ("error", st.get("error"))]
    for key, value in rows:
        if value not in (None, ""):
            table.add_row(key, escape(str(value)))
    counts = {k: v for k, v in (st.get("counts") or {}).items() if v}
    if counts:
        table.add_row("tasks", escape(", ".join(f"{k} {v}" for k, v in counts.items())))
    return table
