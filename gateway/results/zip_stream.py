"""The result zip of one job, streamed: cut-outs, comparison sheets, report and gallery.

Nothing is compressed (PNG and JPEG already are), so the zip's size is known before the first
byte and sent as Content-Length; ZIP64 records appear by themselves past 4 GiB or 65 535
members. Files are read in a worker thread while the event loop sends the bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import zipstream

from gateway.db.tables import Task
from gateway.results.report import ReportItem, build_report
from shared.states import TaskState
from shared.storage import (
    FINAL_RESULTS,
    MATTING_OUTPUT,
    PathOutsideDataDir,
    Storage,
    model_output_rel,
)

__all__ = ["JobZip", "build_zip", "zip_chunks"]


@dataclass
class JobZip:
    stream: zipstream.ZipStream
    size: int | None
    """The exact byte count when known in advance (sized stream), else None."""
    members: int


def _existing(storage: Storage, rel: str) -> Path | None:
    # A rejected item's name may be one no file can have (too long): that is "no file" too.
    try:
        p = storage.resolve(rel)
        return p if p.is_file() else None
    except (PathOutsideDataDir, OSError):
        return None


def build_zip(
    storage: Storage,
    job_id: str,
    output: str,
    tasks: Sequence[Task],
    *,
    models: Sequence[str] = (),
    sized: bool = True,
) -> JobZip:
    """Assemble the zip (blocking: it stats every file; call it in a thread).

    A task contributes the files that exist; a missing one (a failed image, or a partial
    download of a running job) is simply absent, and the report says why. With several
    `models` every model's cut-out goes in: the first under docs/DESIGN.md's name ("Public
    API"), the others as `matting_output/<x>.<model>.png` (`shared.storage.model_output_rel`).
    """
    zs = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=sized)
    items: list[ReportItem] = []
    members = 0
    names = list(models) or [""]  # one unnamed model: docs/DESIGN.md's names ("Public API")
    added: set[str] = set()  # a zip never holds one name twice (gateway.intake.output_names)
    for t in tasks:
        stem = Storage.stem_path(t.path)
        compare_name = None
        first_rel = storage.matting_rel(job_id, t.path)
        cut_names: list[str] = []
        # A rejected input has no outputs; files under its name belong to another input.
        rejected = t.state == TaskState.REJECTED.value
        for i, model in enumerate(() if rejected else names):
            kinds = (False, True) if output == "both" else (False,)
            for alpha in kinds:
                found = _existing(storage, model_output_rel(first_rel, model, i, alpha))
                name = model_output_rel(f"{MATTING_OUTPUT}/{stem}.png", model, i, alpha)
                if found is not None and name not in added:
                    added.add(name)
                    zs.add_path(str(found), name)
                    cut_names.append(name)
                    members += 1
        first_name = f"{MATTING_OUTPUT}/{stem}.png"
        matte_name = first_name if first_name in cut_names else None
        sheet = None if rejected else _existing(storage, storage.compare_rel(job_id, t.path))
        if sheet is not None and f"{FINAL_RESULTS}/{stem}_compare.jpg" not in added:
            compare_name = f"{FINAL_RESULTS}/{stem}_compare.jpg"
            added.add(compare_name)
            zs.add_path(str(sheet), compare_name)
            members += 1
        items.append(
            ReportItem(
                path=t.path,
                state=t.state,
                error=t.error if t.state != TaskState.COMPLETED.value else None,
                metrics=t.metrics,
                timings=_timings(t),
                matting_output=matte_name,
                compare_output=compare_name,
            )
        )
    report = build_report(job_id, items, list(models))
    zs.add(report.json_bytes, "report.json")
    zs.add(report.csv_bytes, "report.csv")
    zs.add(report.html_bytes, "index.html")
    members += 3
    return JobZip(zs, len(zs) if sized else None, members)


def _timings(t: Task) -> dict[str, float | None]:
    def span(a: float | None, b: float | None) -> float | None:
        return round(b - a, 4) if a is not None and b is not None else None

    return {
        "queued_s": span(t.queued_at, t.matting_dispatched_at),
        "matting_s": span(t.matting_started_at, t.matting_finished_at),
        "matting_wait_s": span(t.matting_dispatched_at, t.matting_started_at),
        "comparison_s": span(t.comparison_started_at, t.comparison_finished_at),
        "comparison_wait_s": span(t.comparison_dispatched_at, t.comparison_started_at),
        "total_s": span(t.queued_at, t.completed_at),
    }


def zip_chunks(job_zip: JobZip) -> Iterator[bytes]:
    """The zip's bytes (a blocking iterator that reads files: iterate it in a threadpool)."""
    yield from job_zip.stream
