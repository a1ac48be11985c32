"""The wire contracts between gateway, balancers and workers (docs/DESIGN.md, "Internal API").

A stage request is one envelope (`StageRequest`) around the stage's own parameters: the
gateway builds `MattingRequest` / `ComparisonRequest`, the worker server checks the parameters
against its stage's `params_model` (a bad one is a 400 that names the field), and the balancer
in between forwards them untouched (`ForwardedRequest`), so it needs no stage knowledge.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from shared.finishing import OutputFormat, OutputOptions
from shared.formats import OutputMode
from shared.limits import MAX_STAGE_BATCH

__all__ = [
    "MODEL_SEP",
    "ComparisonParams",
    "ComparisonRequest",
    "ForwardedRequest",
    "HealthInfo",
    "Heartbeat",
    "MatteRef",
    "MattingParams",
    "MattingRequest",
    "ModelReload",
    "StageAnswer",
    "StageBatch",
    "StageBatchAnswer",
    "StageError",
    "StageRequest",
    "StageResult",
    "Timings",
    "validation_detail",
]

MODEL_SEP = ","
"""Joins several engine names (the job's `model` option, a batch key): never inside a name."""

ParamsT = TypeVar("ParamsT")


class StageRequest(BaseModel, Generic[ParamsT]):
    """One image for one stage. Paths are relative to DATA_DIR; the worker refuses others."""

    task_id: int
    job_id: str
    input: str
    output: str
    params: ParamsT


class _Params(BaseModel):
    # An unknown field is refused, not ignored: a misspelt or retired field (the old
    # single-model `model` / `matte`) must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


_OPTION_KEYS = ("format", "max_size", "background", "crop")
_OPTION_DEFAULTS: dict[str, object] = {"format": OutputFormat.PNG, "max_size": None,
                                       "background": None, "crop": None}


class MattingParams(_Params):
    models: list[str] | None = None
    """Engines in the job's order (model against model when more than one); None: the
    worker's default engine. The first writes `req.output`, every further one
    `<x>.<model>.png` (`shared.storage.model_output_rel`)."""
    output: OutputMode = OutputMode.RGBA
    format: OutputFormat = OutputFormat.PNG
    """The cut-out's format; `req.output` ends with its suffix (`shared.finishing`)."""
    max_size: int | None = None
    """Longest side of the cut-out in pixels (scaled down, never up); None: input's size."""
    background: str | None = None
    """`#rrggbb` composited under the cut-out (then RGB); None: transparent."""
    crop: float | None = None
    """Crop to the object plus this margin in percent of its box; None: no crop."""

    @model_validator(mode="after")
    def _options_valid(self) -> MattingParams:
        try:
            checked = OutputOptions.check(self.format.value, self.max_size, self.background,
                                          self.crop)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if checked.background != self.background:
            raise ValueError(f"background must be #rrggbb (lower case), not {self.background!r}")
        return self

    @model_serializer(mode="wrap")
    def _omit_default_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The output options only when set: a default job's request is what it was before
        they existed (a worker of the older version, which forbids unknown fields, takes it)."""
        data: dict[str, Any] = handler(self)
        for key in _OPTION_KEYS:
            if key in data and getattr(self, key) == _OPTION_DEFAULTS[key]:
                del data[key]
        return data

    @property
    def options(self) -> OutputOptions:
        """The output options as `shared.finishing` applies them."""
        return OutputOptions(self.format, self.max_size, self.background, self.crop)

    @field_validator("models", mode="before")
    @classmethod
    def _engine_names(cls, v: object) -> object:
        if v is None:
            return v
        if not isinstance(v, list) or not v:
            raise ValueError("must be a non-empty list of engine names")
        for name in v:
            if not isinstance(name, str) or not name or MODEL_SEP in name:
                raise ValueError(f"{name!r} is not an engine name")
        if len(set(v)) != len(v):
            raise ValueError(f"names a model twice: {v}")
        return v

    @field_validator("output", mode="before")
    @classmethod
    def _default_output(cls, v: object) -> object:
        return OutputMode.RGBA if v is None or v == "" else v


class MatteRef(_Params):
    """One model's matte for the comparison stage."""

    model: str = Field(min_length=1)
    path: str = Field(min_length=1)
    """DATA_DIR-relative path of the matte (the model's cut-out or alpha PNG)."""
    confidence: float | None = Field(default=None, ge=0.0, le=1.0,
                                     exclude_if=lambda v: v is None)
    """The matting engine's confidence in this matte, shown on the sheet; None: unknown (and
    left off the wire, so a request without one reads as before)."""


class ComparisonParams(_Params):
    mattes: list[MatteRef]
    """One per model, in the job's order: one sheet row and one metrics entry each."""
    gt: str | None = None
    """DATA_DIR-relative path of the ground-truth alpha, when the upload had one."""
    metrics_output: str | None = None
    """Where to write the per-image metrics JSON (DATA_DIR-relative); None: not written."""

    @field_validator("mattes", mode="before")
    @classmethod
    def _matte_list(cls, v: object) -> object:
        if not isinstance(v, list) or not v:
            raise ValueError("must be a non-empty list of {model, path}")
        for entry in v:
            if not isinstance(entry, dict | MatteRef) or (
                isinstance(entry, dict) and not (isinstance(entry.get("model"), str)
                                                 and entry["model"])
            ):
                raise ValueError(f"{entry!r} is not {{model, path}}")
        return v

    @field_validator("mattes")
    @classmethod
    def _one_per_model(cls, v: list[MatteRef]) -> list[MatteRef]:
        names = [m.model for m in v]
        if len(set(names)) != len(names):
            raise ValueError(f"names a model twice: {names}")
        return v


class MattingRequest(StageRequest[MattingParams]):
    params: MattingParams = Field(default_factory=MattingParams)


class ComparisonRequest(StageRequest[ComparisonParams]):
    pass


class ForwardedRequest(StageRequest[dict[str, JsonValue]]):
    """A request as a balancer (or the worker server, before its stage's check) sees it: the
    envelope checked, the parameters any JSON object."""

    params: dict[str, JsonValue] = Field(default_factory=dict)


class StageBatch(BaseModel):
    """Several stage requests in one call to `<route>/batch` (STAGE_BATCH_SIZE): the gateway
    sends one HTTP request per batch instead of one per image, so the per-request cost of the
    gateway → balancer → worker hops is paid once for the batch. Each request is handled
    exactly as if it had come alone; the balancer forwards the batch to one worker."""

    requests: list[ForwardedRequest] = Field(min_length=1, max_length=MAX_STAGE_BATCH)


class StageAnswer(BaseModel):
    """One request's answer inside a batch: the status and body a single call would have
    had (a `StageResult` for 200, a `StageError` else)."""

    status_code: int
    body: dict[str, Any]


class StageBatchAnswer(BaseModel):
    """The answer to a `StageBatch`: one `StageAnswer` per request, in the same order."""

    answers: list[StageAnswer]


def validation_detail(exc: ValidationError) -> str:
    """A pydantic error as one line naming each field: `params.models: …; params.output: …`."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


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


class ModelReload(BaseModel):
    """`POST /models/reload` (worker, balancer): which loaded engines to load again from their
    files; none named: every loaded one."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = Field(default=None, max_length=100)


class HealthInfo(BaseModel):
    status: Literal["ok", "loading", "error"]
    service: str
    worker_id: str = ""
    detail: str = ""
