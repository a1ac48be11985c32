"""The wire contracts between gateway, balancers and workers (docs/DESIGN.md, "Internal API")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["HealthInfo", "Heartbeat", "StageError", "StageRequest", "StageResult", "Timings"]


class StageRequest(BaseModel):
    """One image for one stage. Paths are relative to DATA_DIR; the worker refuses others."""

    task_id: int
    job_id: str
    input: str
    output: str
    params: dict[str, Any] = Field(default_factory=dict)


class Timings(BaseModel):
    """Wall-clock seconds (epoch) in the worker, so the gateway can show where time goes."""

    queued: float
    started: float
    finished: float
    batch_size: int = 1


class StageResult(BaseModel):
    status: Literal["success"] = "success"
    output: str
    worker_id: str
    timings: Timings
    extra: dict[str, Any] = Field(default_factory=dict)
    """Stage-specific results: the comparison stage returns its metrics here."""


class StageError(BaseModel):
    status: Literal["error"] = "error"
    detail: str
    retryable: bool
    worker_id: str = ""


class Heartbeat(BaseModel):
    url: str
    worker_id: str
    capacity: int = 8
    engine: str = ""


class HealthInfo(BaseModel):
    status: Literal["ok", "loading", "error"]
    service: str
    worker_id: str = ""
    detail: str = ""
