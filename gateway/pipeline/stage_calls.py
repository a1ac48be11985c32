"""One stage call and what its answer means for the task.

A failed attempt (counted towards MAX_RETRIES): an error answer, a timeout, a connection
broken mid-request, a malformed answer, a success whose output file is missing.
Not an attempt: a 503/429 (the balancer is saturated or has no healthy worker), a 507 (the
shared volume is full: every image would fail the same way until space is freed) or a refused
connection (the API is down or restarting) — the task waits, it is not the image's fault.
Nor is a 401: the stage refused our INTERNAL_TOKEN, an operator's mistake to fix, not the
image's.

Every error kept on a task is user-visible (/status, /jobs/{id}/tasks, report.csv), so
`public_error` takes internal addresses (balancer and worker URLs) and DATA_DIR's absolute
path out of it, and transport failures are named by their kind, not their text.

Each call carries an `X-Request-ID` (`request_id_for`: `<job>:<task>:<stage>:<random>`), which
the balancer forwards to the worker; all three log it, so one grep finds a call's lines.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, Field, ValidationError

from shared.internal_auth import auth_headers
from shared.lanes import LANE_HEADER, Lane
from shared.log_context import REQUEST_ID_HEADER
from shared.schemas import (
    StageAnswer,
    StageBatchAnswer,
    StageError,
    StageRequest,
    StageResult,
)
from shared.stages import Stage
from shared.storage import PathOutsideDataDir, Storage

__all__ = [
    "Outcome", "Recorded", "call_stage", "call_stage_batch", "public_error", "request_id_for",
]

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]{},;]+")
"""Any URL (scheme://host…): what the balancer and workers call each other by."""


def public_error(stage: Stage, text: str, storage: Storage) -> str:
    """`text` fit for users: every URL becomes the stage's service name, DATA_DIR's absolute
    path is dropped (paths stay DATA_DIR-relative, as the API shows them)."""
    text = _URL.sub(f"<{stage.api_service}>", text)
    root = str(storage.root)
    return text.replace(root + "/", "").replace(root, "DATA_DIR")


def request_id_for(stage: Stage, job_id: str, task_id: int) -> str:
    """A stage call's `X-Request-ID`: its job, task and stage, and a random part that tells
    one attempt from the next (≤ 128 characters: job ids are uuids)."""
    return f"{job_id}:{task_id}:{stage}:{uuid.uuid4().hex[:12]}"


class Recorded(StrEnum):
    """What recording one stage answer did to its task (the scheduler counts each kind)."""

    DONE = "done"
    """The stage succeeded; the task moved on to the next stage or completed."""
    RELEASED = "released"
    """The stage was unavailable; the lease was given back without counting an attempt."""
    RETRY = "retry"
    """A failed attempt; the task waits for its backoff, then goes back to its queue."""
    FAILED = "failed"
    """A failed attempt that was the last one (or not retryable): permanently failed."""
    LATE = "late"
    """Nothing recorded: the lease was re-taken or the job is gone (cancelled, finished)."""


@dataclass
class Outcome:
    result: StageResult | None = None
    error: str = ""
    retryable: bool = True
    unavailable: float | None = None
    """Seconds to wait (Retry-After) when the stage refused or was unreachable; None else."""


async def call_stage(
    client: httpx.AsyncClient, url: str, stage: Stage, req: StageRequest[Any], storage: Storage,
    request_timeout: float, token: str | None = None, request_id: str | None = None,
    lane: Lane = Lane.BULK,
) -> Outcome:
    """One call to the stage's balancer with the internal token (per request: the client is
    shared with webhooks, which must never see it) and `request_id` as its `X-Request-ID`;
    the error, if any, made public. `lane`: sync for `/api/remove` (`shared.lanes`)."""
    headers = auth_headers(token)
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    if lane is not Lane.BULK:
        headers[LANE_HEADER] = lane.value
    out = await _call(client, url, stage, req, storage, request_timeout, headers)
    if out.error:
        out.error = public_error(stage, out.error, storage)
    return out


async def _call(
    client: httpx.AsyncClient, url: str, stage: Stage, req: StageRequest[Any], storage: Storage,
    request_timeout: float, headers: dict[str, str],
) -> Outcome:
    try:
        r = await client.post(url, json=req.model_dump(mode="json"), timeout=request_timeout,
                              headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        return Outcome(error=f"{stage} API unreachable ({type(exc).__name__})", unavailable=0.0)
    except httpx.TimeoutException:
        return Outcome(error=f"{stage} stage timed out after {request_timeout:g} s")
    except httpx.HTTPError as exc:
        return Outcome(error=f"{stage} request failed ({type(exc).__name__})")
    out = _answered(stage, req, storage, r.status_code, r.content, r.headers)
    return (await _confirm_objects(stage, [req], storage, [out]))[0]


async def _confirm_objects(stage: Stage, reqs: Sequence[StageRequest[Any]], storage: Storage,
                           outs: list[Outcome]) -> list[Outcome]:
    """On S3, `_answered`'s check that a success's output exists: one HEAD per success, in a
    thread (not a stat on the event loop). A worker pointed at another bucket or prefix, or at
    a local folder, fails its tasks here as one on the wrong volume does locally."""
    if storage.is_local:
        return outs
    wanted = [i for i, o in enumerate(outs) if o.result is not None]
    if not wanted:
        return outs

    def missing() -> set[int]:
        return {i for i in wanted if not storage.objects.exists(reqs[i].output)}

    try:
        gone = await asyncio.to_thread(missing)
    except Exception as exc:  # the store is unreachable: the tasks go back, not failed
        return [Outcome(error=f"cannot check {stage}'s outputs in the object store "
                              f"({type(exc).__name__})", unavailable=0.0)
                if o.result is not None else o for o in outs]
    return [Outcome(error=f"{stage} reported success but {reqs[i].output} is missing")
            if i in gone else o for i, o in enumerate(outs)]


def _answered(
    stage: Stage, req: StageRequest[Any], storage: Storage, status: int, content: bytes | Any,
    headers: httpx.Headers | None = None,
) -> Outcome:
    """What one answer (its status and body: raw JSON bytes, the parsed object inside a batch
    answer, or the body already typed by `_typed_answers`) means for the task."""
    if status == 200:
        try:
            result = (content if isinstance(content, StageResult)
                      else StageResult.model_validate_json(content) if isinstance(content, bytes)
                      else StageResult.model_validate(content))
        except ValidationError as exc:
            return Outcome(error=f"{stage} answer malformed: {exc.errors()[:1]}")
        try:  # a local stat; on S3 `_confirm_objects` checks, off the event loop
            present = not storage.is_local or storage.resolve(req.output).is_file()
        except PathOutsideDataDir:
            present = False
        if not present:
            return Outcome(error=f"{stage} reported success but {req.output} is missing")
        return Outcome(result=result)
    if status == 401:
        return Outcome(error=f"{stage} API refused the gateway's INTERNAL_TOKEN",
                       unavailable=0.0)
    if status in (429, 503):
        try:
            wait = float(headers.get("retry-after", "0") if headers is not None else "0")
        except ValueError:
            wait = 0.0
        return Outcome(error=f"{stage} API busy ({status})", unavailable=wait)
    try:
        err = (content if isinstance(content, StageError)
               else StageError.model_validate_json(content) if isinstance(content, bytes)
               else StageError.model_validate(content))
        detail, retryable = err.detail, err.retryable
    except ValidationError:
        text = (content.decode("utf-8", "replace") if isinstance(content, bytes)
                else json.dumps(content))
        detail = f"HTTP {status}: {text[:500]}"
        retryable = status >= 500 or status == 408
    if status == 507:
        return Outcome(error=f"{stage}: {detail}", unavailable=0.0)
    return Outcome(error=f"{stage}: {detail}", retryable=retryable)


async def call_stage_batch(
    client: httpx.AsyncClient, url: str, stage: Stage, reqs: Sequence[StageRequest[Any]],
    storage: Storage, request_timeout: float, token: str | None = None,
    request_id: str | None = None,
) -> list[Outcome]:
    """One call to the stage's batch route (`shared.schemas.StageBatch`) for several tasks;
    one `Outcome` per request, in order. A failure of the call itself (transport, busy, a
    malformed answer) is every task's outcome, counted or not as for a single call."""
    headers = auth_headers(token)
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    outs = await _call_batch(client, url, stage, reqs, storage, request_timeout, headers)
    for out in outs:
        if out.error:
            out.error = public_error(stage, out.error, storage)
    return outs


async def _call_batch(
    client: httpx.AsyncClient, url: str, stage: Stage, reqs: Sequence[StageRequest[Any]],
    storage: Storage, request_timeout: float, headers: dict[str, str],
) -> list[Outcome]:
    def every(out: Outcome) -> list[Outcome]:
        return [Outcome(out.result, out.error, out.retryable, out.unavailable) for _ in reqs]

    # a `StageBatch`'s JSON from pydantic's own encoder: no dict per request and no second
    # encoding by the standard library's (issue 17, the gateway's per-task cost)
    body = '{"requests":[' + ",".join(r.model_dump_json() for r in reqs) + "]}"
    headers = {**headers, "content-type": "application/json"}
    try:
        r = await client.post(url, content=body, timeout=request_timeout, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        return every(Outcome(error=f"{stage} API unreachable ({type(exc).__name__})",
                             unavailable=0.0))
    except httpx.TimeoutException:
        return every(Outcome(error=f"{stage} stage timed out after {request_timeout:g} s"))
    except httpx.HTTPError as exc:
        return every(Outcome(error=f"{stage} request failed ({type(exc).__name__})"))
    if r.status_code != 200:
        # The call as a whole was refused (busy, no worker, bad token…): the same verdict a
        # single request would have had, for each task.
        return every(_answered(stage, reqs[0], storage, r.status_code, r.content, r.headers))
    answers: Sequence[StageAnswer | _TypedAnswer] | None = _typed_answers(r.content)
    if answers is None:
        try:
            answers = StageBatchAnswer.model_validate_json(r.content).answers
        except ValidationError as exc:
            return every(Outcome(error=f"{stage} answer malformed: {exc.errors()[:1]}"))
    if len(answers) != len(reqs):
        return every(Outcome(error=f"{stage} answered {len(answers)} results for "
                                   f"{len(reqs)} requests"))
    outs = [_answered(stage, req, storage, a.status_code, a.body)
            for req, a in zip(reqs, answers, strict=True)]
    return await _confirm_objects(stage, reqs, storage, outs)


class _TypedAnswer(BaseModel):
    """A `StageAnswer` whose body is typed already: a `StageResult` or a `StageError`, told
    apart by their `status` field."""

    status_code: int
    body: Annotated[StageResult | StageError, Field(discriminator="status")]



class _TypedBatch(BaseModel):
    answers: list[_TypedAnswer]


def _typed_answers(content: bytes) -> list[_TypedAnswer] | None:
    """A batch answer parsed in one pass from its bytes, each body straight into its type
    (issue 17: parsing the answers was the gateway's largest item; a `StageBatchAnswer` builds
    every body as a dict and validates it a second time: 32 → 19 µs per task). None when any
    part does not fit — a malformed body, a success without `status`, an error body under a
    200 — and the caller takes the general path, which says exactly what is wrong: every
    answer that parses here means the same task outcome as there."""
    try:
        answers = _TypedBatch.model_validate_json(content).answers
    except ValidationError:
        return None
    for a in answers:
        if (a.status_code == 200) != isinstance(a.body, StageResult):
            return None
    return answers
