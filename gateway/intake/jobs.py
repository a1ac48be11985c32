"""Creating a job, shared by `POST /upload` (one request) and `POST /jobs` (a finished tus
upload): the option checks, the job row, and the links the client follows."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import repo
from gateway.errors import BadRequest
from gateway.pipeline.callbacks import check_callback_url
from shared.finishing import OutputOptions
from shared.formats import OUTPUT_MODES, OutputMode
from shared.responses import JobLinks
from shared.settings import Settings
from shared.states import JobState
from shared.zoo import all_models, load_zoo

__all__ = ["OUTPUTS", "OUTPUT_OPTION_KEYS", "OptionValue", "job_links", "new_job",
           "validate_job_options", "validate_output_options"]

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
    known = [m.name for m in all_models(settings.models_dir, load_zoo(settings.model_catalogue))]
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


OUTPUT_OPTION_KEYS = ("format", "max_size", "background", "crop")
"""The output options' names: query parameters, `POST /jobs` fields, tus metadata keys."""
OptionValue = object
"""An output option as it arrives: a query string, tus metadata text or any JSON value (a
wrong type is a 400 here, not a framework 422)."""


def _number(name: str, value: OptionValue, kind: type[int] | type[float]) -> int | float | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRequest(f"{name} must be a number, not {value!r}")
    try:
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value.strip()) if isinstance(value, str) else int(value)
        return float(value)
    except (ValueError, OverflowError):
        shown = value[:40] if isinstance(value, str) else value
        raise BadRequest(f"{name} must be {'a whole' if kind is int else 'a'} number, "
                         f"not {shown!r}") from None


def validate_output_options(output: str, raw: Mapping[str, OptionValue] | None) -> OutputOptions:
    """The output options of an upload (`shared.finishing`), checked: 400 with the reason.
    They come as text (query, tus metadata) or JSON (`POST /jobs`); numbers are parsed here
    so a bad one is a 400 that names it, not a framework 422. `background` means nothing for
    a grey matte (output=alpha), and is refused there rather than ignored."""
    raw = raw or {}
    fmt, background = raw.get("format"), raw.get("background")
    if fmt is not None and not isinstance(fmt, str):
        raise BadRequest(f"format must be a string, not {fmt!r}")
    if background is not None and not isinstance(background, str):
        raise BadRequest(f"background must be a colour string, not {background!r}")
    size = _number("max_size", raw.get("max_size"), int)
    margin = _number("crop", raw.get("crop"), float)
    try:
        opts = OutputOptions.check(fmt or None, None if size is None else int(size),
                                   background, margin)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if opts.background is not None and output == OutputMode.ALPHA:
        raise BadRequest("background has no meaning with output=alpha (a grey matte)")
    return opts


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
    options: OutputOptions | None = None,
) -> None:
    """The job row with validated options. `POST /upload` creates it `uploading` before the
    body arrives; a tus upload's job starts `ingesting`, its file already in place."""
    o = options or OutputOptions()
    await repo.create_job(
        s, job_id, state=state.value, model=model, output=output, callback_url=callback_url,
        api_key_hash=api_key_hash, filename=filename, upload_path=upload_path,
        format=o.format.value, max_size=o.max_size, background=o.background, crop=o.crop,
    )


def job_links(job_id: str) -> JobLinks:
    """The 202 answer of every job-creating route."""
    return JobLinks.of(job_id)
