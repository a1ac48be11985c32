"""The life of a resumable upload in the database: its row, the upload-complete event, the
job it becomes, the sweeper of expired uploads and the reconciler that finishes what a crash
interrupted. Every write goes through `Database.write()`, the gateway's one write lock; the
SQL is `gateway.db.repo`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.db import repo
from gateway.db.database import Database
from gateway.db.locks import Chore
from gateway.db.tables import Upload
from gateway.errors import Conflict, GatewayError
from gateway.intake.jobs import (
    OUTPUT_OPTION_KEYS,
    OptionValue,
    new_job,
    validate_job_options,
    validate_output_options,
)
from gateway.intake.pacing import Pace
from gateway.intake.quotas import enforce_quota
from gateway.intake.receive import upload_extension
from gateway.intake.splice import SocketBody
from gateway.intake.tus_parts import PartState, append_parts, discard, object_key, read_state
from gateway.intake.tus_store import UploadBusy, UploadLocks, append_body, file_size, tus_error
from shared.logs import safe
from shared.settings import Settings
from shared.states import JobState
from shared.storage import Storage
from shared.timing import (
    TUS_AUTOJOB_GRACE_S,
    TUS_EXPIRY_S,
    TUS_LOCK_WAIT_S,
    TUS_SWEEP_INTERVAL_S,
)

__all__ = ["TusUploads"]

log = logging.getLogger("gateway.intake.tus_store")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def _move(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)


@dataclass
class TusUploads:
    """Resumable uploads of one gateway: the database, storage and settings they need, the
    per-upload locks, and how a finished upload's ingest is started (`start_ingest`, the
    gateway's), handed in so that nothing here reaches back into the gateway's state."""

    db: Database
    storage: Storage
    settings: Settings
    start_ingest: Callable[[str], object]
    locks: UploadLocks = field(init=False)
    """One lock per resumable upload: its PATCHes, `POST /jobs` and the sweeper take turns,
    on this gateway and (Postgres) across gateways."""

    def __post_init__(self) -> None:
        self.locks = UploadLocks(self.db.chores)

    # --- where the bytes are: a file in DATA_DIR/uploads, or one multipart upload on S3 ----
    @property
    def on_objects(self) -> bool:
        """True with STORAGE_URL=s3://…: uploads are multipart uploads (`tus_parts`)."""
        return not self.storage.is_local

    async def new_bytes(self, upload_id: str) -> dict[str, Any]:
        """Room for a new upload's bytes: an empty file, or a multipart upload begun on the
        store. The row's fields that go with it."""
        if self.on_objects:
            mp = await asyncio.to_thread(self.storage.objects.start_multipart,
                                         object_key(upload_id))
            return {"multipart_id": mp}
        path = self.storage.upload_path(upload_id)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(path.touch)
        return {}

    async def drop_bytes(self, upload_id: str, multipart_id: str | None,
                         completed: bool = False) -> None:
        """An upload's bytes that no job owns: its file, or its multipart upload and tails."""
        if self.on_objects:
            await asyncio.to_thread(discard, self.storage.objects, upload_id, multipart_id,
                                    completed)
            return
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.storage.upload_path(upload_id).unlink)

    async def offset(self, row: Upload) -> int | None:
        """The bytes the server holds of the upload (None when its file is gone): the file's
        size, or on S3 its stored parts and tail (the declared length once completed)."""
        if not self.on_objects:
            return await asyncio.to_thread(file_size, self.storage.upload_path(row.id))
        if row.completed_at is not None or row.job_id is not None:
            return row.length
        return (await self._state(row)).offset

    async def _state(self, row: Upload) -> PartState:
        async with self.db.read() as s:
            etags = await repo.upload_etags(s, row.id)
        return await asyncio.to_thread(read_state, self.storage.objects, row.id,
                                       row.length or 0, etags)

    async def append(self, row: Upload, offset: int, body: AsyncIterator[bytes],
                     checksum: bytes | None, socket_body: SocketBody | None = None) -> int:
        """Append a PATCH body at `offset` (checked to be the upload's); the new offset. With
        `socket_body` (the server's `BodyTap`), a body bound for a local file is spliced from
        the socket (`append_body`); on object storage `body` is read as before."""
        length = row.length or 0
        if not self.on_objects:
            return await append_body(body, self.storage.upload_path(row.id), offset, length,
                                     checksum, self.settings.min_free_disk, socket_body,
                                     Pace(self.settings))

        async def record(first: int, etags: list[str]) -> None:
            async with self.db.write() as s:
                await repo.add_upload_parts(s, row.id, first, etags)

        state = await self._state(row)
        assert row.multipart_id is not None
        return await append_parts(body, self.storage.objects, row.id, row.multipart_id, length,
                                  state, checksum, record)

    def deadline(self, row: Upload) -> float:
        """The upload's hard end (created_at + TUS_MAX_LIFETIME_S): no PATCH moves its expiry
        past it, so a client trickling a byte a day cannot hold the disk for ever."""
        return row.created_at + self.settings.tus_max_lifetime_s

    def expiry(self, row: Upload, now: float) -> float:
        """When the upload expires if it made progress at `now`."""
        return min(now + TUS_EXPIRY_S, self.deadline(row))

    async def get_upload(
        self, upload_id: str, now: float | None = None, *, owner: str | None = None
    ) -> Upload:
        """The live upload row, or 404 for an unknown one, an unfinished one past its expiry,
        an unused one past its hard deadline and, with `owner` (a key hash), another key's
        (the same 404: ids cannot be probed)."""
        async with self.db.read() as s:
            row = await repo.get_upload(s, upload_id, owner=owner)
        t = time.time() if now is None else now
        if row is None or (row.job_id is None and (
                (row.completed_at is None and row.expires_at < t) or self.deadline(row) < t)):
            raise tus_error(404, f"unknown or expired upload {upload_id!r}")
        return row


    async def mark_progress(self, row: Upload, offset: int) -> Upload:
        """After a PATCH: push the expiry out (never past the hard deadline); on the final
        byte, record the upload-complete event (`completed_at`), which `POST /jobs` and the
        reconciler go by."""
        now = time.time()
        values: dict[str, Any] = {"expires_at": self.expiry(row, now)}
        if row.length is not None and offset >= row.length and row.completed_at is None:
            values["completed_at"] = now
        async with self.db.write() as s:
            await repo.set_upload(s, row.id, **values)
        for k, v in values.items():
            setattr(row, k, v)
        return row


    async def remove_upload(self, upload_id: str) -> None:
        """Row and bytes (a file that already became a job's input is the job's, and stays)."""
        async with self.db.write() as s:
            row = await repo.get_upload(s, upload_id)
            await repo.delete_upload(s, upload_id)
        if row is not None and row.job_id is None:
            await self.drop_bytes(upload_id, row.multipart_id, row.completed_at is not None)
        elif row is None:
            await self.drop_bytes(upload_id, None)


    async def job_from_upload(
        self,
        upload_id: str,
        *,
        model: str | None = None,
        output: str = "rgba",
        callback_url: str | None = None,
        api_key_hash: str | None = None,
        filename: str | None = None,
        owner: str | None = None,
        finishing: Mapping[str, OptionValue] | None = None,
    ) -> str:
        """A finished upload becomes a job (id = the upload's id, so a retry can never make a
        second one): its file moves to `input/<job>/upload.<ext>`, the job row is created
        `ingesting` with the upload's `job_id` in the same transaction, then ingest starts.
        404 unknown (or, with `owner`, another key's), 409 unfinished or already used, 400 bad
        options or file type. `finishing`: the output options (format, max_size, background,
        crop) as they came."""
        model, output, callback_url = validate_job_options(
            self.settings, model, output, callback_url
        )
        options = validate_output_options(output, finishing)
        try:
            async with self.locks.hold(upload_id, TUS_LOCK_WAIT_S):
                row = await self.get_upload(upload_id, owner=owner)
                if row.job_id is not None:
                    raise Conflict(f"upload already used by job {row.job_id}")
                src = self.storage.upload_path(upload_id)
                if row.completed_at is None:
                    size = await self.offset(row)
                    raise Conflict(f"upload is not complete (offset {size or 0} of {row.length})")
                name = filename or row.filename
                dest = self.storage.job_input(upload_id) / f"upload.{upload_extension(name)}"
                if self.on_objects:  # completed into the job's folder already: nothing moves
                    upload_rel = object_key(upload_id)
                else:
                    await asyncio.to_thread(_move, src, dest)
                    upload_rel = self.storage.relative(dest)
                try:
                    async with self.db.write() as s:
                        await enforce_quota(s, api_key_hash, self.settings)
                        await new_job(
                            s, upload_id, model=model, output=output, callback_url=callback_url,
                            api_key_hash=api_key_hash, filename=name, upload_path=upload_rel,
                            state=JobState.INGESTING, options=options,
                        )
                        await repo.set_upload(s, upload_id, job_id=upload_id)
                except BaseException:
                    if not self.on_objects:
                        await asyncio.shield(asyncio.to_thread(_move, dest, src))
                    raise
        except UploadBusy:
            raise Conflict("another request is using this upload; try again") from None
        self.start_ingest(upload_id)
        log.info("upload %s became a job: %s (%s bytes), model=%s output=%s", upload_id, safe(name),
                 row.length, model, output)
        return upload_id


    async def sweep_expired(self, now: float | None = None) -> int:
        """Delete uploads past `expires_at` or, unused, past their hard deadline (unfinished
        ones, and finished ones nobody turned into a job): rows and files. Returns how many
        went. An upload busy with a request is skipped."""
        t = time.time() if now is None else now
        async with self.db.read() as s:
            ids = await repo.expired_upload_ids(s, t, t - self.settings.tus_max_lifetime_s)
        removed = 0
        for upload_id in ids:
            try:
                async with self.locks.hold(upload_id, 0.0):
                    async with self.db.write() as s:
                        row = await repo.get_upload(s, upload_id)
                        if row is None or (row.expires_at >= t and (
                                row.job_id is not None or self.deadline(row) >= t)):
                            continue
                        await repo.delete_upload(s, upload_id)
                    if row.job_id is None:
                        await self.drop_bytes(upload_id, row.multipart_id,
                                              row.completed_at is not None)
                    removed += 1
            except UploadBusy:
                continue
        if removed:
            log.info("swept %d expired uploads", removed)
        return removed


    async def reconcile_uploads(self, grace: float = 0.0) -> int:
        """Finish what a crash cut short: an upload whose bytes are all on disk gets its
        upload-complete event; a file moved for a job whose row never got written moves back;
        finished uploads that asked for `autojob` and were not claimed within `grace` seconds
        become jobs with the options of their metadata. Returns the jobs created."""
        now = time.time()
        async with self.db.read() as s:
            rows = await repo.uploads_without_job(s)
            job_ids = await repo.existing_job_ids(s, [r.id for r in rows])
        created = 0
        for row in rows:
            if self.on_objects:
                row = await self._reconcile_parts(row)
            else:
                row = await self._reconcile_file(row, job_ids)
            meta = row.metadata_json or {}
            if row.completed_at is None or not _truthy(meta.get("autojob")):
                continue
            if (grace and row.completed_at > now - grace) or row.id in job_ids:
                continue
            try:
                await self.job_from_upload(
                    row.id, model=meta.get("model"), output=meta.get("output") or "rgba",
                    callback_url=meta.get("callback_url"), api_key_hash=row.api_key_hash,
                    finishing={k: meta.get(k) for k in OUTPUT_OPTION_KEYS},
                )
                created += 1
            except GatewayError as exc:
                log.warning("upload %s: no automatic job: %s", row.id, exc.detail)
        return created

    async def _reconcile_file(self, row: Upload, job_ids: Collection[str]) -> Upload:
        """A file moved for a job whose row never got written moves back; a file that holds
        every byte gets the upload-complete event."""
        path = self.storage.upload_path(row.id)
        size = await asyncio.to_thread(file_size, path)
        if size is None and row.id not in job_ids:
            moved = sorted(self.storage.job_input(row.id).glob("upload.*"))
            if moved:
                await asyncio.to_thread(_move, moved[0], path)
                size = await asyncio.to_thread(file_size, path)
        if row.completed_at is None and size is not None and size == row.length:
            row = await self.mark_progress(row, size)
        return row

    async def _reconcile_parts(self, row: Upload) -> Upload:
        """On S3: an upload whose parts hold every byte but whose multipart upload was never
        completed (the gateway died in between) is completed now and gets its event. One busy
        with a PATCH here is left to it; one that another gateway completes meanwhile is
        recognised by its object."""
        if row.completed_at is not None or row.multipart_id is None:
            return row
        store, key = self.storage.objects, object_key(row.id)
        try:
            async with self.locks.hold(row.id, 0.0):
                if await asyncio.to_thread(store.size, key) != row.length:
                    state = await self._state(row)
                    if state.offset != row.length:
                        return row
                    parts = [(i + 1, etag) for i, etag in enumerate(state.etags)]
                    try:
                        await asyncio.to_thread(store.complete_multipart, key,
                                                row.multipart_id, parts)
                    except Exception:
                        if await asyncio.to_thread(store.size, key) != row.length:
                            log.warning("upload %s: its parts could not be completed",
                                        row.id, exc_info=True)
                            return row
                return await self.mark_progress(row, row.length or 0)
        except UploadBusy:
            return row


    async def sweep_loop(self, interval: float = TUS_SWEEP_INTERVAL_S) -> None:
        """The gateway's background upkeep of resumable uploads, every `interval` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.db.chores.holds(Chore.TUS):
                    continue  # another gateway of the same Postgres runs the sweep
                await self.sweep_expired()
                await self.reconcile_uploads(grace=TUS_AUTOJOB_GRACE_S)
            except Exception:
                log.exception("upload sweep failed")
