"""The gateway's public JSON answers, as pydantic models: the gateway declares them as
`response_model`s (so /openapi.json shows every shape) and the client parses them.

Every field has a default so a client reads a partial answer (an older gateway, a stand-in)
without failing; in the OpenAPI output schema every field is still required
(`json_schema_serialization_defaults_required`), since the gateway always sends them all.
Unknown fields are kept (`extra="allow"`), so a client passes a newer gateway's answer on whole.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.catalogue import ModelInfo

__all__ = [
    "ApiInfo",
    "ErrorDetail",
    "GalleryPage",
    "GalleryRow",
    "GatewayInfo",
    "GatewayLimits",
    "Health",
    "JobLinks",
    "JobList",
    "JobStages",
    "JobStatus",
    "JobSummary",
    "MetricNames",
    "ModelInfo",
    "ModelList",
    "ModelMetrics",
    "ModelReloadReport",
    "PublicModel",
    "StageHealth",
    "StageStats",
    "TaskComparison",
    "TaskMatting",
    "TaskPage",
    "TaskView",
    "WorkerReload",
]


ModelMetrics = dict[str, dict[str, float | None]]
"""A task's quality figures per model name (`sad`, `mse`, … against a ground truth; `coverage`,
`uncertain`, `border_alpha` always); null where a figure is undefined."""


class PublicModel(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_serialization_defaults_required=True)


class ErrorDetail(PublicModel):
    """Every 4xx/5xx answer of the gateway: what went wrong and, where it helps, what to do."""

    detail: str


class JobLinks(PublicModel):
    """The 202 answer of every job-creating route (`POST /upload`, `POST /jobs`)."""

    job_id: str = ""
    status_url: str = ""
    download_url: str = ""

    @classmethod
    def of(cls, job_id: str) -> JobLinks:
        return cls(job_id=job_id, status_url=f"/status/{job_id}",
                   download_url=f"/download/{job_id}")


class JobSummary(PublicModel):
    """Counts, progress, throughput and ETA of one job (`/jobs` rows, `DELETE /jobs/{id}`,
    and the webhook body)."""

    job_id: str = ""
    state: str = ""
    total: int = 0
    counts: dict[str, int] = Field(default_factory=dict, description="tasks per task state")
    completed: int = 0
    failed: int = Field(default=0, description="tasks failed for good")
    rejected: int = Field(default=0, description="files that were not images (never processed)")
    retrying: int = Field(default=0, description="tasks failed once, waiting for a retry")
    progress: float = Field(default=0.0, description="percent of tasks in a final state")
    throughput_per_s: float = Field(
        default=0.0, description="images through the stages per second since the first dispatch"
    )
    eta_s: float | None = Field(default=None, description="None while there is no throughput")
    created_at: float | None = None
    updated_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    filename: str = ""
    model: str = Field(default="", description="engine name(s), comma-separated")
    output: str = ""
    format: str = Field(default="png", description="the cut-out's format: png, webp or avif")
    max_size: int | None = Field(
        default=None, description="longest side of the cut-out in px; None: the input's size")
    background: str | None = Field(
        default=None, description="#rrggbb under the cut-out; None: transparent")
    crop: float | None = Field(
        default=None, description="crop margin in percent of the object's box; None: no crop")
    error: str | None = None
    status_url: str = ""
    download_url: str = ""
    callback_state: str | None = Field(
        default=None,
        description="the webhook: pending, delivered or failed; None when the job has none",
    )
    callback_error: str | None = Field(
        default=None, description="why the webhook failed for good (its last attempt's error)"
    )


class StageStats(PublicModel):
    """Where one stage's time goes: mean worker time, mean wait from dispatch to worker start,
    and how many images each worker did."""

    done: int = 0
    mean_s: float | None = None
    mean_wait_s: float | None = None
    workers: dict[str, int] = Field(default_factory=dict)


class JobStages(PublicModel):
    matting: StageStats = Field(default_factory=StageStats)
    comparison: StageStats = Field(default_factory=StageStats)


class JobStatus(JobSummary):
    """`GET /status/{id}`: the summary and the per-stage aggregates."""

    stages: JobStages = Field(default_factory=JobStages)


class JobList(PublicModel):
    """`GET /jobs`: one page of jobs, newest first."""

    total: int = 0
    limit: int = 0
    offset: int = 0
    jobs: list[JobSummary] = Field(default_factory=list)


class TaskMatting(PublicModel):
    dispatched_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    batch_size: int | None = None


class TaskComparison(PublicModel):
    dispatched_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None


class TaskView(PublicModel):
    """One image of a job."""

    id: int = 0
    path: str = ""
    state: str = ""
    error: str | None = None
    retry_count: int = 0
    failed_stage: str | None = None
    next_attempt_at: float | None = Field(default=None, description="set while `failed`")
    matting_output: str | None = None
    compare_output: str | None = None
    metrics: ModelMetrics | None = Field(
        default=None, description="quality figures against a ground truth, when there was one"
    )
    queued_at: float | None = None
    matting: TaskMatting = Field(default_factory=TaskMatting)
    comparison: TaskComparison = Field(default_factory=TaskComparison)
    completed_at: float | None = None


class TaskPage(PublicModel):
    """`GET /jobs/{id}/tasks`: one page of a job's tasks, optionally of one state."""

    job_id: str = ""
    state: str | None = None
    total: int = 0
    limit: int = 0
    offset: int = 0
    after: int | None = None
    tasks: list[TaskView] = Field(default_factory=list)
    next_after: int | None = Field(
        default=None, description="pass as `after` for the next page; null on the last page")


class ModelList(PublicModel):
    """`GET /models`: the engines a job may name in `model=`."""

    default: str = ""
    models: list[ModelInfo] = Field(default_factory=list)


class WorkerReload(PublicModel):
    """One matting worker's answer to a reload (no address: internal URLs stay internal)."""

    worker_id: str = ""
    ok: bool = False
    reloaded: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict,
                                   description="model → why its file no longer loads")
    not_loaded: list[str] = Field(default_factory=list,
                                  description="named, but not loaded on this worker: untouched")
    error: str = Field(default="", description="why the worker did not answer")


class ModelReloadReport(PublicModel):
    """`POST /models/reload` (ADMIN_KEY): every matting worker loads its engines again."""

    workers: list[WorkerReload] = Field(default_factory=list)


class Health(PublicModel):
    """`GET /health`: ready when the database answers."""

    status: Literal["ok", "degraded"] = "ok"
    service: str = "gateway"
    scheduler: bool = False


class MetricNames(PublicModel):
    """The report's metric keys: against a ground truth, and those that need none."""

    ground_truth: list[str] = Field(default_factory=list)
    free: list[str] = Field(default_factory=list)


class ApiInfo(PublicModel):
    """`GET /api-info`: the constants a client would otherwise repeat (no data in them)."""

    final_job_states: list[str] = Field(default_factory=list)
    final_task_states: list[str] = Field(default_factory=list)
    metrics: MetricNames = Field(default_factory=MetricNames)


class GalleryRow(PublicModel):
    """One image in the page's gallery, its outputs as ready URLs (null until made)."""

    id: int = 0
    path: str = ""
    state: str = ""
    error: str | None = None
    metrics: ModelMetrics | None = None
    sheet: str | None = None
    cutout: str | None = None
    confidence: float | None = None
    """The matting engine's confidence in the cut-out, 0–1; null until matted (issue 16)."""


class GalleryPage(PublicModel):
    """`GET /jobs/{id}/gallery`: one page of a job's images, by task id."""

    job_id: str = ""
    total: int = 0
    tasks: list[GalleryRow] = Field(default_factory=list)
    next_after: int | None = Field(
        default=None, description="pass as `after` for the next page; null on the last page")


class GatewayLimits(PublicModel):
    """The limits a client should know before it uploads (the settings of the same names)."""

    max_upload_size: int = 0
    max_archive_members: int = 0
    max_uncompressed_size: int = 0
    max_compression_ratio: float = 0.0
    max_image_pixels: int = 0
    max_retries: int = 0
    max_concurrent_jobs: int = 0
    max_jobs_per_hour: int = 0
    max_jobs_per_day: int = 0


class StageHealth(PublicModel):
    """One stage in `GET /info`: its balancer's health and the gateway's queue for it."""

    stage: str = ""
    service: str = ""
    status: Literal["ok", "degraded", "unreachable"] = "unreachable"
    healthy_workers: int = 0
    workers: int = 0
    balancer_queued: int = 0
    """Requests waiting in the balancer for a free worker."""
    queued_tasks: int = 0
    """Tasks waiting in the gateway for this stage (all jobs)."""
    in_flight: int = 0
    """Stage calls this gateway has open now."""


class GatewayInfo(PublicModel):
    """`GET /info`: version, uptime, the limits and formats a client needs, and the stages'
    health and queues (all tenants' load: behind the key like the rest of the API)."""

    service: str = "gateway"
    version: str = ""
    started_at: float = 0.0
    uptime_s: float = 0.0
    default_model: str = ""
    image_formats: list[str] = Field(default_factory=list)
    """Image suffixes accepted, alone or inside an archive."""
    archive_formats: list[str] = Field(default_factory=list)
    output_modes: list[str] = Field(default_factory=list)
    limits: GatewayLimits = Field(default_factory=GatewayLimits)
    stages: list[StageHealth] = Field(default_factory=list)
    tasks: dict[str, int] = Field(default_factory=dict)
    """Tasks by state over all jobs."""
