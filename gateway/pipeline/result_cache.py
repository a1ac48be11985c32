"""The content-hash cache: an image already processed with the same models and options, for
the same tenant, reuses that result instead of running the models again.

Key (`cache_key`, computed at ingest, `gateway.intake.ingest`): sha256 over a salt and the
image file's bytes. The salt (`job_salt`) is the job's tenant (its key's hash; the one
anonymous tenant on an open gateway), its engines in order, each with the identity of its
model file (name, size, mtime: a replaced file is another model), its `output` and its output
options. So two tasks share a key only when the worker would be given the same bytes and the
same instructions, by the same tenant.

Tenant boundary: never across tenants. Reusing tenant A's result for tenant B would tell B,
by the speed of the answer and the `cached` mark in its report, that someone uploaded that
exact image: a leak. Per tenant it tells nothing the tenant does not know.

At dispatch (`gateway.pipeline.scheduler`, matting stage only), `ResultCache.matting`:
1. a task of the same key in flight in this process: wait for it, then reuse its files;
2. else a task of the same key whose matting is done, in a job not cancelled, with its files
   still on disk (newest first): reuse them;
3. else call the stage as usual (others of the same key wait on this one).
Reuse links the files (a hard link, a copy where links fail; on S3 a server-side copy:
`ObjectStore.copy`) under the task's own names, atomically, and answers a success whose
worker is `CACHE_WORKER`: the task goes on to the comparison stage (its ground truth may
differ) and its report row says `cached: true`. A missing file, a failed link: the task simply
runs. RESULT_CACHE=0: no keys, no lookups.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

from gateway.db import repo
from gateway.db.database import Database
from gateway.db.transitions import Claimed
from gateway.pipeline.stage_calls import Outcome
from shared.catalogue import list_models
from shared.finishing import OutputOptions
from shared.formats import OutputMode
from shared.schemas import MattingRequest, StageResult, Timings
from shared.storage import PathOutsideDataDir, Storage, model_output_rel

__all__ = ["CACHE_WORKER", "HASH_CHUNK", "ResultCache", "add_cache_keys", "file_key",
           "job_salt", "object_key"]

CACHE_WORKER = "(cache)"
"""The worker id of a reused result (parentheses: no WORKER_ID a service sets has them)."""
HASH_CHUNK = 1024 * 1024
"""Bytes read at a time when hashing an image at ingest."""


def job_salt(models: list[str], output: str, options: OutputOptions, tenant: str | None,
             models_dir: Path | None) -> bytes:
    """What besides the image's bytes decides a task's matting result (see the module)."""
    infos = {m.name: m for m in list_models(models_dir)}
    engines: list[list[Any]] = []
    for name in models:
        info = infos.get(name)
        ident: list[Any] = [name, "builtin"]
        if info is not None and info.path and models_dir is not None:
            with contextlib.suppress(OSError):
                st = (models_dir / info.path).stat()
                ident = [name, info.path, st.st_size, st.st_mtime_ns]
        engines.append(ident)
    parts = {"tenant": tenant or "", "engines": engines, "output": output,
             "options": options.as_dict()}
    return json.dumps(parts, sort_keys=True).encode()


def file_key(path: Path, salt: bytes) -> str:
    """sha256 of `salt`, a separator and the file's bytes, in hex (64 characters)."""
    with path.open("rb") as f:
        return _hash(f, salt)


def object_key(storage: Storage, key: str, salt: bytes) -> str:
    """`file_key` of an input wherever it is: the file on a local store, the object on S3
    (read in ranged blocks, never whole)."""
    local = storage.objects.local_path(key)
    if local is not None:
        return file_key(local, salt)
    with storage.objects.open_read(key) as f:
        return _hash(f, salt)


def _hash(f: BinaryIO, salt: bytes) -> str:
    h = hashlib.sha256(salt)
    h.update(b"\0")
    while chunk := f.read(HASH_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def add_cache_keys(rows: list[dict[str, Any]], storage: Storage, salt: bytes) -> None:
    """Set `cache_key` on every task row: the key where it has an input file, else None (runs
    in a worker thread)."""
    for row in rows:
        row["cache_key"] = None
        if row.get("input"):
            try:
                row["cache_key"] = object_key(storage, row["input"], salt)
            except (OSError, PathOutsideDataDir):
                row["cache_key"] = None


def _outputs(first: str, models: list[str], keep_alpha: bool) -> list[str]:
    rels = []
    for i, m in enumerate(models):
        rels.append(model_output_rel(first, m, i))
        if keep_alpha:
            rels.append(model_output_rel(first, m, i, alpha=True))
    return rels


class ResultCache:
    """Reuse at dispatch (see the module); one per scheduler."""

    def __init__(self, db: Database, storage: Storage) -> None:
        self.db, self.storage = db, storage
        self.inflight: dict[str, asyncio.Future[str | None]] = {}
        """cache key → the first output of the task running it now (None: it failed)."""
        self.hits = 0

    async def matting(self, c: Claimed, req: MattingRequest,
                      call: Callable[[], Awaitable[Outcome]]) -> Outcome:
        """The task's matting outcome: reused when its key's result exists, else `call()`."""
        key = c.cache_key
        if not key:
            return await call()
        leader = self.inflight.get(key)
        if leader is not None:
            theirs = await asyncio.shield(leader)
            reused = await self._reuse(theirs, req) if theirs else None
            return reused if reused is not None else await call()
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.inflight[key] = fut  # before any await: the next of this key waits on us
        source: str | None = None
        try:
            async with self.db.read() as s:
                found = await repo.done_outputs_for_key(s, key)
            for prev in found:
                reused = await self._reuse(prev, req)
                if reused is not None:
                    source = req.output
                    return reused
            out = await call()
            if out.result is not None:
                source = req.output
            return out
        finally:
            self.inflight.pop(key, None)
            fut.set_result(source)

    async def matting_batch(
        self, chunk: list[Claimed], reqs: list[MattingRequest],
        call_batch: Callable[[list[MattingRequest]], Awaitable[list[Outcome]]],
        call_one: Callable[[MattingRequest], Awaitable[Outcome]],
    ) -> list[Outcome]:
        """`matting` for a batch of tasks (`STAGE_BATCH_SIZE` > 1): the hits are answered
        from the cache, every miss goes in one `call_batch`, and a task whose key another
        task is running (in this batch or elsewhere) waits for it, then reuses its files (or,
        when that one failed, runs alone through `call_one`)."""
        outs: list[Outcome | None] = [None] * len(chunk)
        loop = asyncio.get_running_loop()
        followers: list[tuple[int, asyncio.Future[str | None]]] = []
        led: dict[int, asyncio.Future[str | None]] = {}
        misses: list[int] = []
        for i, c in enumerate(chunk):
            key = c.cache_key
            if not key:
                misses.append(i)
            elif (leader := self.inflight.get(key)) is not None:
                followers.append((i, leader))
            else:
                led[i] = self.inflight[key] = loop.create_future()
        try:
            found_by_key: dict[str, list[str]] = {}
            if led:  # one query for the batch's keys, not one per task
                async with self.db.read() as s:
                    found_by_key = await repo.done_outputs_for_keys(
                        s, (chunk[i].cache_key or "" for i in led))
            for i in led:
                found = found_by_key.get(chunk[i].cache_key or "", [])
                for prev in found:
                    if (reused := await self._reuse(prev, reqs[i])) is not None:
                        outs[i] = reused
                        break
                if outs[i] is None:
                    misses.append(i)
            if misses:
                called = await call_batch([reqs[i] for i in misses])
                for i, out in zip(misses, called, strict=True):
                    outs[i] = out
        finally:
            for i, fut in led.items():
                self.inflight.pop(chunk[i].cache_key or "", None)
                done = outs[i]
                fut.set_result(reqs[i].output if done is not None and done.result is not None
                               else None)
        for i, leader in followers:
            theirs = await asyncio.shield(leader)
            reused = await self._reuse(theirs, reqs[i]) if theirs else None
            outs[i] = reused if reused is not None else await call_one(reqs[i])
        return [o for o in outs if o is not None]

    async def _reuse(self, source: str, req: MattingRequest) -> Outcome | None:
        models = req.params.models or []
        keep_alpha = (req.params.output == OutputMode.BOTH or req.params.options.keeps_matte)
        pairs = list(zip(_outputs(source, models, keep_alpha),
                         _outputs(req.output, models, keep_alpha), strict=True))
        if source == req.output:
            return None
        try:
            await asyncio.to_thread(self._link_all, pairs)
        except (OSError, PathOutsideDataDir, ValueError):
            return None
        self.hits += 1
        now = time.time()
        result = StageResult(output=req.output, worker_id=CACHE_WORKER,
                             timings=Timings(queued=now, started=now, finished=now,
                                             batch_size=0))
        return Outcome(result=result)

    def _link_all(self, pairs: list[tuple[str, str]]) -> None:
        objects = self.storage.objects
        if not all(objects.exists(src) for src, _ in pairs):
            raise FileNotFoundError("a cached output is gone")
        for src, dst in pairs:
            objects.copy(src, dst)
