"""`GET /jobs/{job_id}/events`: a job's progress as Server-Sent Events, instead of polling.

One `event: status` (data: the very JSON object `/status` answers) each time the job changes,
`: ping` comments every EVENTS_HEARTBEAT_S while nothing does (proxies keep the stream open),
and a last `event: end` with the final status when the job reaches a final state; then the
stream closes.

Why it is cheap: a stream does not poll the database. Every write of the gateway goes through
`Database.write()` (the one write lock), which bumps a generation counter and wakes waiters
when it commits; a stream sleeps on that, then reads its job (the same two queries as
`/status`) at most once per EVENTS_MIN_INTERVAL_S, and sends an event only when something but
the clock-driven fields (throughput, ETA) changed; the job's close cuts that interval short
(`Database.job_end_signal`: per job, so only its own streams read early, once), so `end`
leaves as the job is closed. A gateway with nothing happening costs its
streams nothing; a busy one costs each stream what a 2-per-second poller of `/status` would.
Signalling per job from the scheduler would wake fewer streams, but it would have to be kept
in step with every place that changes a job (answers, ingest, maintenance, cancel, restart
recovery); the write lock already is that one place.

Bounds: at most MAX_EVENT_STREAMS streams at once (429 beyond, and clients fall back to
polling); a stream ends when its client disconnects or stops reading for
EVENTS_SEND_TIMEOUT_S, and its slot is freed whichever way it ends. The job is looked up
before the stream starts, behind the same key and tenant checks as `/status`, so an unknown
or another tenant's job is an ordinary JSON 404 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from gateway.api.deps import GW, Caller, CallerDep
from gateway.api.docs import errors
from gateway.api.jobs import read_status
from gateway.state import GatewayState
from shared.responses import ErrorDetail, JobStatus
from shared.states import FINAL_JOB_STATES, JobState
from shared.timing import EVENTS_HEARTBEAT_S, EVENTS_MIN_INTERVAL_S, EVENTS_SEND_TIMEOUT_S

__all__ = ["router"]

router = APIRouter(tags=["jobs"])

STREAMS_FULL_RETRY_S = 30
"""`Retry-After` of a 429 for a full MAX_EVENT_STREAMS: clients poll `/status` meanwhile."""
_CLOCK_FIELDS = {"throughput_per_s", "eta_s"}
"""Fields that move with the clock alone: a change of only these is not an event."""
_STREAM_DOC = (
    "`event: status` lines, each `data:` the JSON object of `GET /status/{job_id}` "
    "(JobStatus), at every change; `: ping` comments while nothing changes; a last "
    "`event: end` with the final status, then the stream closes."
)


class _Stream(EventSourceResponse):
    """An event stream that gives its MAX_EVENT_STREAMS slot back however it ends
    (finished, client gone, send timeout, shutdown), even if its body never started."""

    def __init__(self, gw: GatewayState, content: AsyncIterator[ServerSentEvent]) -> None:
        super().__init__(content, ping=EVENTS_HEARTBEAT_S, send_timeout=EVENTS_SEND_TIMEOUT_S)
        self._gw = gw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._gw.event_streams -= 1


def _changes(status: JobStatus) -> dict[str, Any]:
    return status.model_dump(exclude=_CLOCK_FIELDS)


async def _events(gw: GatewayState, job_id: str, caller: Caller, status: JobStatus,
                  seen: int, ended: asyncio.Event) -> AsyncIterator[ServerSentEvent]:
    """The stream's body: `status` (read at generation `seen`, after `ended` was taken)
    first, then every change."""
    last: dict[str, Any] | None = None
    while True:
        if JobState(status.state) in FINAL_JOB_STATES:
            yield ServerSentEvent(status.model_dump_json(), event="end")
            return
        if (now := _changes(status)) != last:
            yield ServerSentEvent(status.model_dump_json(), event="status")
            last = now
        await gw.db.wait_for_write(seen, EVENTS_HEARTBEAT_S)
        # at most a read per interval, but the job's close is told at once (`job_end_signal`)
        # (never cleared: the job's other streams share it, and the next read ends this one)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), EVENTS_MIN_INTERVAL_S)
        seen = gw.db.generation  # before the read: a write during it wakes the next wait
        try:
            status = await read_status(gw, job_id, caller)
        except HTTPException:  # the job's row went away meanwhile: nothing more to tell
            return


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"description": _STREAM_DOC,
              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **errors(404),
        429: {"model": ErrorDetail,
              "description": "MAX_EVENT_STREAMS streams are open: poll /status instead"},
    },
)
async def job_events(job_id: str, gw: GW, caller: CallerDep) -> Response:
    """Live progress of one job as Server-Sent Events (`text/event-stream`): a `status` event
    at every change and an `end` event when the job is over. Send the API key as the usual
    `Authorization` header (read the stream with `fetch`, not `EventSource`, which cannot send
    one). Unknown and other tenants' jobs are 404; beyond MAX_EVENT_STREAMS open streams 429
    (poll `/status` instead)."""
    seen = gw.db.generation
    ended = gw.db.job_end_signal(job_id)  # before the read: a close after it is not missed
    status = await read_status(gw, job_id, caller)
    if gw.event_streams >= gw.settings.max_event_streams:
        raise HTTPException(
            429, detail=f"{gw.settings.max_event_streams} event streams are open "
            f"(MAX_EVENT_STREAMS); poll /status/{job_id} instead",
            headers={"Retry-After": str(STREAMS_FULL_RETRY_S)})
    gw.event_streams += 1
    return _Stream(gw, _events(gw, job_id, caller, status, seen, ended))
