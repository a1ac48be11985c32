"""What every log line of one request or one task carries: its request id and, where known,
its job and task ids.

The request id (`X-Request-ID`) follows one stage call from the gateway through the balancer
to the worker and back; each service's request middleware (`shared.logs`) puts it in
`REQUEST_ID` for the request's duration, and the formatters add it to every line. Contextvars
follow `await`s and `asyncio.to_thread`, so a line logged deep in a handler carries it too.
This module imports neither starlette nor fastapi: the gateway's pipeline sets it as well.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = [
    "CONTEXT_FIELDS",
    "MAX_REQUEST_ID_CHARS",
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "bind",
    "current_fields",
    "new_request_id",
    "valid_request_id",
]

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_CHARS = 128
"""Longer incoming ids are replaced: an id is copied into every line of its request."""
_VALID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID_CHARS}}}")
"""Visible ASCII only: no spaces, controls or non-ASCII (nothing that disguises a log line)."""

CONTEXT_FIELDS = ("request_id", "job_id", "task_id", "stage")
"""The keys `current_fields` may return, in the order the text format shows them."""

REQUEST_ID: ContextVar[str | None] = ContextVar("mattepipe_request_id", default=None)
_FIELDS: ContextVar[dict[str, object] | None] = ContextVar("mattepipe_log_fields", default=None)


def new_request_id() -> str:
    """A fresh id for a request that came without a valid one."""
    return uuid.uuid4().hex


def valid_request_id(value: str | None) -> str | None:
    """`value` if it may be used as a request id (1–128 visible ASCII characters), else None."""
    if value is None:
        return None
    value = value.strip()
    return value if _VALID.fullmatch(value) else None


@contextlib.contextmanager
def bind(request_id: str | None = None, **fields: object) -> Iterator[None]:
    """Within the block, every log line carries `request_id` (when given) and `fields`
    (`job_id`, `task_id`, `stage`) besides those bound outside it."""
    rid_token = REQUEST_ID.set(request_id) if request_id is not None else None
    merged = {**(_FIELDS.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _FIELDS.set(merged)
    try:
        yield
    finally:
        _FIELDS.reset(token)
        if rid_token is not None:
            REQUEST_ID.reset(rid_token)


def current_fields() -> dict[str, object]:
    """The request id and bound fields of the running context (absent ones left out)."""
    out: dict[str, object] = {}
    rid = REQUEST_ID.get()
    if rid:
        out["request_id"] = rid
    out.update(_FIELDS.get() or {})
    return out
