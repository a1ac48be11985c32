"""Creating a job, shared by `POST /upload` (one request) and `POST /jobs` (a finished tus
upload): the option checks, the job row, and the links the client follows."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import repo
from gateway.errors import BadRequest
from gateway.pipeline.callbacks import check_callback_url
from shared.catalogue import model_names
from shared.formats import OUTPUT_MODES, OutputMode
from shared.responses import JobLinks
from shared.settings import Settings
from shared.states import JobState

__all__ = ["OUTPUTS", "job_links", "new_job", "validate_job_options"]

OUTPUTS = OUTPUT_MODES
"""The job's `output` option (`shared.formats.OutputMode`)."""


def validate_job_options(
    settings: Settings, model: str | None, output: str, callback_url: str | None
) -> tuple[str, str, str | None]:
    """The job options of an upload (also for a finished resumable upload), checked: the
    normalised (model, output, callback_url), or a 400 that says what is wrong.

    `model` may name several engines, comma-separated (model against model): each must be
    known, none twice; the first keeps docs/DESIGN.md's output names ("Public API"), the others get
    `<x>.<model>.png` (`shared.storage.model_output_rel`)."""
    names = [m.strip() for m in (model or settings.default_model).split(",")]
    known = model_names(settings.models_dir)
    for name in names:
        if name not in known:
            raise BadRequest(f"unknown model {name!r}; available: {', '.join(known)}")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise BadRequest(f"model names {', '.join(twice)} more than once")
    if output not in OUTPUTS:
        raise BadRequest(f"unknown output {output!r}; use one of: {', '.join(OUTPUTS)}")
    if output == OutputMode.BOTH and "alpha" in names[1:]:
        # `<x>.alpha.png` is the first model's alpha file; a further model's cut-out
        # (`<x>.<model>.png`, see shared.storage.model_output_rel) would overwrite it.
        raise BadRequest("with output=both a model called 'alpha' must come first in model=")
    if callback_url is not None:
        # the URL is the uploader's: no userinfo, a literal IP must be public (checked again,
        # resolved, at every send: `gateway.pipeline.callbacks`)
        why = check_callback_url(callback_url, allow_private=settings.callback_allow_private)
        if why is not None:
            raise BadRequest(why)
    return ",".join(names), output, callback_url or None


async def new_job(
    s: AsyncSession,
    job_id: str,
    *,
    model: str,
    output: str,
    callback_url: str | None,
    api_key_hash: str | None,
    filename: str = "",
    upload_path: str = "",
    state: JobState = JobState.UPLOADING,
) -> None:
    """The job row with validated options. `POST /upload` creates it `uploading` before the
    body arrives; a tus upload's job starts `ingesting`, its file already in place."""
    await repo.create_job(
        s, job_id, state=state.value, model=model, output=output, callback_url=callback_url,
        api_key_hash=api_key_hash, filename=filename, upload_path=upload_path,
    )


def job_links(job_id: str) -> JobLinks:
    """The 202 answer of every job-creating route."""
    return JobLinks.of(job_id)
