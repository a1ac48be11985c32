"""The job summary of `/status`, `/jobs`, the upload answer and the webhook body."""

from __future__ import annotations

from typing import Any

from gateway.db.tables import Job
from shared.responses import JobSummary
from shared.states import FINAL_JOB_STATES, FINAL_TASK_STATES, JobState, TaskState

__all__ = ["callback_state", "job_summary", "summarize"]

_PROCESSED = (TaskState.COMPLETED.value, TaskState.PERMANENTLY_FAILED.value)


def job_summary(job: Job, counts: dict[str, int], now: float) -> dict[str, Any]:
    """`summarize` as the JSON object the webhook posts (without the webhook's own state,
    which is still pending while it is being sent)."""
    return summarize(job, counts, now).model_dump(
        mode="json", exclude={"callback_state", "callback_error"}
    )


def summarize(job: Job, counts: dict[str, int], now: float) -> JobSummary:
    """Counts, progress, throughput and ETA of one job.

    Throughput counts the images that went through the stages (completed or failed for good)
    per second since the first dispatch; rejected images never enter a stage, so they count
    towards progress but not towards throughput.
    """
    full = {s.value: int(counts.get(s.value, 0)) for s in TaskState}
    total = max(int(job.total or 0), sum(full.values()))
    final = sum(full[s.value] for s in FINAL_TASK_STATES)
    processed = sum(full[s] for s in _PROCESSED)
    is_final = JobState(job.state) in FINAL_JOB_STATES
    end = job.finished_at if (is_final and job.finished_at) else now
    elapsed = (end - job.started_at) if job.started_at else 0.0
    throughput = processed / elapsed if elapsed > 0 and processed else 0.0
    remaining = max(0, total - final)
    if is_final:
        eta: float | None = 0.0
    elif throughput > 0:
        eta = round(remaining / throughput, 1)
    else:
        eta = None
    if job.state == JobState.COMPLETED.value or (is_final and total == 0):
        progress = 100.0
    else:
        progress = round(100.0 * final / total, 2) if total else 0.0
    return JobSummary(
        job_id=job.id,
        state=job.state,
        total=total,
        counts=full,
        completed=full[TaskState.COMPLETED.value],
        failed=full[TaskState.PERMANENTLY_FAILED.value],
        rejected=full[TaskState.REJECTED.value],
        retrying=full[TaskState.FAILED.value],
        progress=progress,
        throughput_per_s=round(throughput, 3),
        eta_s=eta,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        filename=job.filename,
        model=job.model,
        output=job.output,
        format=job.format or "png",
        max_size=job.max_size,
        background=job.background,
        crop=job.crop,
        error=job.error,
        status_url=f"/status/{job.id}",
        download_url=f"/download/{job.id}",
        callback_state=callback_state(job),
        callback_error=job.callback_error,
    )


def callback_state(job: Job) -> str | None:
    """pending (attempts still to come), delivered, failed; None without a `callback_url`."""
    if not job.callback_url:
        return None
    if not job.callback_done:
        return "pending"
    return "failed" if job.callback_error else "delivered"
