"""Task and job states: the vocabulary of docs/DESIGN.md ("One image's way through"), for the
gateway, the report and the CLI."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTIVE_TASK_STATES", "FINAL_JOB_STATES", "FINAL_TASK_STATES", "JobState", "TaskState"]


class TaskState(StrEnum):
    PENDING = "pending"
    """Waiting for the scheduler: new, or back from a failure or an expired lease."""
    DISPATCHED_MATTING = "dispatched_matting"
    """Sent to the matting API; holds a lease until the answer comes."""
    MATTING_DONE = "matting_done"
    """The cut-out is on disk; waiting for the comparison stage."""
    DISPATCHED_COMPARISON = "dispatched_comparison"
    """Sent to the comparison API; holds a lease until the answer comes."""
    COMPLETED = "completed"
    """Both stages done: cut-out, sheet and metrics are on disk."""
    FAILED = "failed"
    """A stage failed; waits for its backoff, then goes back to pending."""
    PERMANENTLY_FAILED = "permanently_failed"
    """Failed MAX_RETRIES times; the last error is kept for the report."""
    REJECTED = "rejected"
    """Bad input, never dispatched; the reason is kept for the report."""


class JobState(StrEnum):
    UPLOADING = "uploading"
    """Bytes are still arriving."""
    INGESTING = "ingesting"
    """The archive is being unpacked and checked, tasks are being created."""
    RUNNING = "running"
    """Tasks are moving through the stages."""
    COMPLETED = "completed"
    """Every image completed."""
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    """Finished, but some images were rejected or failed for good."""
    FAILED = "failed"
    """Nothing usable: the upload could not be read, or no image completed."""
    CANCELLED = "cancelled"
    """Cancelled by the user; its files are removed."""


FINAL_TASK_STATES = frozenset(
    {TaskState.COMPLETED, TaskState.PERMANENTLY_FAILED, TaskState.REJECTED}
)
ACTIVE_TASK_STATES = frozenset(
    {TaskState.DISPATCHED_MATTING, TaskState.DISPATCHED_COMPARISON}
)
FINAL_JOB_STATES = frozenset(
    {JobState.COMPLETED, JobState.COMPLETED_WITH_ERRORS, JobState.FAILED, JobState.CANCELLED}
)
