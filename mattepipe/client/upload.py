"""A resumable upload of a file or folder that ends as a job: what `run` and `upload` do
before they follow the job, without any terminal output (the caller gets events).

The first start creates a tus upload and records its URL (see `resume.py`); a start with the
same arguments asks the server how far it got and sends only the rest, or, when the job
already exists, hands back that job without sending anything. A gateway without tus gets
one plain `POST /upload` (streamed; not resumable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mattepipe.client.gateway import GatewayClient, GatewayError
from mattepipe.client.packing import Source
from mattepipe.client.resume import ResumeState, StateStore, state_key
from mattepipe.client.tus import UPLOAD_CHUNK, TusUnsupported, rechunk
from shared.responses import JobLinks

__all__ = ["PLAIN_BLOCK", "JobOptions", "UploadEvents", "UploadOutcome", "upload_source"]

PLAIN_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class JobOptions:
    model: str | None = None
    output: str = "rgba"
    callback_url: str | None = None
    format: str | None = None
    """Output options (`shared.finishing`); None: the server's default."""
    max_size: int | None = None
    background: str | None = None
    crop: float | None = None

    def finishing(self) -> dict[str, Any]:
        """The output options that are set, as the gateway's fields."""
        opts = {"format": self.format, "max_size": self.max_size,
                "background": self.background, "crop": self.crop}
        return {k: v for k, v in opts.items() if v is not None}


@dataclass
class UploadEvents:
    """Hooks for a progress display; each is optional."""

    started: Callable[[int, int, bool], None] | None = None
    """(total bytes, offset already on the server, resumable)."""
    progress: Callable[[int], None] | None = None
    """Bytes on the server so far."""
    note: Callable[[str], None] | None = None


@dataclass
class UploadOutcome:
    job: JobLinks
    key: str
    total: int
    resumed_from: int = 0
    """Bytes the server already held when this start began."""
    sent: int = 0
    """Bytes sent by this start."""
    resumable: bool = True
    existing_job: bool = False
    """The job had been created by an earlier start; nothing was sent."""
    notes: list[str] = field(default_factory=list)


def upload_source(client: GatewayClient, source: Source, options: JobOptions,
                  store: StateStore, events: UploadEvents | None = None,
                  chunk: int = UPLOAD_CHUNK, stop_after: int | None = None) -> UploadOutcome:
    """Upload `source` (resuming an earlier start with the same arguments) and create its job.
    Raises GatewayError / TusError with the server's reason; UploadStopped for `stop_after`."""
    ev = events or UploadEvents()

    def note(msg: str) -> None:
        if ev.note:
            ev.note(msg)

    # the output options are part of the key: the same folder with another format is a new job
    output_key = options.output + (f"|{sorted(options.finishing().items())}"
                                   if options.finishing() else "")
    key = state_key(source.path, source.fingerprint, client.base_url, options.model,
                    output_key)
    store.prune()
    state = store.load(key)
    if state is not None and state.job_id:
        job_id = state.job_id
        try:
            client.status(job_id)
        except GatewayError as exc:
            if exc.status != 404:
                raise
            note(f"job {job_id} of an earlier start is gone; uploading again")
            store.drop(key)
            state = None
        else:
            note(f"job {job_id} was created by an earlier start; following it")
            return UploadOutcome(job=JobLinks.of(job_id), key=key, total=source.size,
                                 resumed_from=source.size, existing_job=True)
    tus = client.tus(chunk)
    url, offset = None, 0
    if state is not None and state.tus_url:
        at = tus.offset(state.tus_url)
        if at is None or at > source.size:
            note("the server no longer holds the earlier upload; starting again")
        else:
            url, offset = state.tus_url, at
            note(f"resuming the earlier upload at byte {at} of {source.size}")
    if url is None:
        try:
            url = tus.create(source.size, {"filename": source.name,
                                           "filetype": source.content_type})
        except TusUnsupported:
            note("this server has no resumable uploads; sending one plain upload")
            outcome = _plain(client, source, options, ev, key)
            store.save(ResumeState(key=key, path=str(source.path), server=client.base_url,
                                   size=source.size, job_id=outcome.job.job_id))
            return outcome
        state = ResumeState(key=key, path=str(source.path), server=client.base_url,
                            size=source.size, tus_url=url)
        store.save(state)
    assert state is not None
    if ev.started:
        ev.started(source.size, offset, True)
    sent = tus.upload(url, source.read_from, offset, source.size, ev.progress, stop_after)
    job = client.create_job(url.rstrip("/").rsplit("/", 1)[-1], options.model, options.output,
                            options.callback_url, options.finishing())
    state.job_id = job.job_id
    store.save(state)
    return UploadOutcome(job=job, key=key, total=source.size, resumed_from=offset, sent=sent)


def _plain(client: GatewayClient, source: Source, options: JobOptions, ev: UploadEvents,
           key: str) -> UploadOutcome:
    if ev.started:
        ev.started(source.size, 0, False)
    progress = ev.progress
    # 1 MiB blocks: a folder's zip ends in thousands of tiny central-directory records,
    # which as single progress samples would drown the speed estimate.
    job = client.upload_stream(
        rechunk(source.read_from(0), PLAIN_BLOCK), source.size, source.name,
        source.content_type, options.model, options.output,
        (lambda done, _total: progress(done)) if progress else None, options.callback_url,
        options.finishing())
    return UploadOutcome(job=job, key=key, total=source.size, sent=source.size,
                         resumable=False)
