"""One image through the matting stage while the caller waits: the work of `/api/remove`.

The request goes to the matting API (the balancer) like any task, to the same workers, but in
the sync lane (`shared.lanes`): the balancer gives it the next free worker slot before any
bulk task, waits at most SYNC_QUEUE_WAIT_S for one, and answers 503 with Retry-After when
SYNC_QUEUE_LIMIT sync requests already wait. That 503 (or an unreachable stage) reaches the
caller as a 503 with Retry-After (`ServiceBusy`); the request is never queued in the task
database, nothing of it is kept.

Files: workers read and write only on the shared DATA_DIR, under a job's folders
(`shared.storage.Storage.job_file`), so each request gets a scratch "job" id
`sync-<32 hex>` (job ids are 32 hex digits: no job can have it): the image is written to
`input/sync-<id>/image.<ext>`, the worker writes `matting_output/sync-<id>/image.png`, the
gateway reads that back, and both folders are removed before the answer is sent, whatever
happened. A gateway that dies in between leaves them; its next start removes every
`sync-*` folder (`sweep_scratch`). The calls use their own HTTP client, so bulk dispatch
holding every connection of the scheduler's pool cannot delay them.

On S3 (`STORAGE_URL=s3://…`) the scratch files are objects under the same keys, written and
read back through `Storage.objects` and deleted by prefix. The start-up sweep is not done
there: several gateways share the bucket, and one starting would delete the others' requests
in flight. A gateway killed mid-request leaves its two small objects; a bucket lifecycle rule
on the `input/sync-` and `matting_output/sync-` prefixes (expire after a day) removes them
(README, "Object storage (S3)").
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from dataclasses import dataclass, field

import httpx

from gateway.errors import BadGateway, BadRequest, ServiceBusy
from gateway.pipeline.stage_calls import call_stage, request_id_for
from shared.finishing import OutputOptions
from shared.formats import OutputMode
from shared.lanes import Lane
from shared.schemas import MattingParams, MattingRequest
from shared.settings import Settings
from shared.stages import Stage
from shared.storage import INPUT, MATTING_OUTPUT, Storage
from shared.timing import BALANCER_RETRY_AFTER_S, REMOVE_STAGE_TIMEOUT_S, STAGE_CONNECT_TIMEOUT_S

__all__ = ["SCRATCH_PREFIX", "SyncRemover", "SyncRequest", "sweep_scratch"]

log = logging.getLogger("gateway.pipeline.sync_remove")

SCRATCH_PREFIX = "sync-"
"""The scratch job ids of sync requests: `sync-<32 hex>` (a real job id is 32 hex digits)."""
SYNC_CONNECTIONS = 64
"""Connections of the sync lane's own client: more sync requests than this cannot be in
flight anyway (the balancer's lane holds SYNC_QUEUE_LIMIT waiting)."""


@dataclass(frozen=True)
class SyncRequest:
    """What the caller asked for, already checked (`gateway.api.remove`)."""

    data: bytes
    fmt: str
    """The image's format as Pillow names it (JPEG, PNG, …): the scratch file's suffix."""
    model: str
    output: OutputMode = OutputMode.RGBA
    options: OutputOptions = field(default_factory=OutputOptions)


def sweep_scratch(storage: Storage) -> int:
    """Remove every sync request's scratch folder (at start-up: a crash left them). Local
    stores only (see the module)."""
    n = 0
    if not storage.is_local:
        return 0
    for area in (INPUT, MATTING_OUTPUT):
        root = storage.root / area
        if not root.is_dir():
            continue
        for d in root.glob(f"{SCRATCH_PREFIX}*"):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


class SyncRemover:
    """The sync lane's side in the gateway: its own HTTP client, and `remove`."""

    def __init__(self, settings: Settings, storage: Storage,
                 timeout: float = REMOVE_STAGE_TIMEOUT_S) -> None:
        self.settings, self.storage, self.timeout = settings, storage, timeout
        self.url = Stage.MATTING.stage_url(settings)
        self.client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        removed = await asyncio.to_thread(sweep_scratch, self.storage)
        if removed:
            log.info("removed %d scratch folders of interrupted sync requests", removed)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=STAGE_CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=SYNC_CONNECTIONS), trust_env=False)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def remove(self, req: SyncRequest) -> bytes:
        """The cut-out (or matte) of `req.data`, as the matting worker wrote it."""
        if self.client is None:
            raise ServiceBusy("the gateway is starting", BALANCER_RETRY_AFTER_S)
        scratch = f"{SCRATCH_PREFIX}{uuid.uuid4().hex}"
        st = self.storage
        source = f"{INPUT}/{scratch}/image.{req.fmt.lower()}"
        stage_req = MattingRequest(
            task_id=0, job_id=scratch, input=source,
            output=st.matting_rel(scratch, "image", req.options.suffix),
            params=MattingParams(models=[req.model], output=req.output,
                                 format=req.options.format, max_size=req.options.max_size,
                                 background=req.options.background, crop=req.options.crop),
        )
        try:
            await asyncio.to_thread(st.objects.put, source, req.data)
            out = await call_stage(
                self.client, self.url, Stage.MATTING, stage_req, st, self.timeout,
                self.settings.internal_token, request_id_for(Stage.MATTING, scratch, 0),
                lane=Lane.SYNC)
            if out.result is not None:
                return await asyncio.to_thread(st.objects.get, stage_req.output)
            if out.unavailable is not None:
                wait = max(BALANCER_RETRY_AFTER_S, round(out.unavailable))
                raise ServiceBusy(f"no matting worker free now ({out.error}); retry in "
                                  f"{wait} s", wait)
            if not out.retryable:  # the worker refused the image itself
                raise BadRequest(f"the image could not be processed: {out.error}")
            raise BadGateway(out.error)
        finally:
            await asyncio.shield(asyncio.to_thread(_drop, st, scratch))


def _drop(storage: Storage, scratch: str) -> None:
    for area in (INPUT, MATTING_OUTPUT):
        storage.objects.delete_prefix(f"{area}/{scratch}/")
