"""OpenAPI declarations shared by the routers: error answers and non-JSON bodies."""

from __future__ import annotations

from typing import Any

from shared.responses import ErrorDetail

__all__ = ["BINARY", "Responses", "errors", "headers"]

Responses = dict[int | str, dict[str, Any]]

BINARY: dict[str, Any] = {"type": "string", "format": "binary"}
"""The schema of a file body (a zip, an image)."""

_WHY = {
    400: "bad request: the detail says what is wrong",
    401: "missing or wrong API key",
    403: "forbidden: this needs the ADMIN_KEY, or it is switched off on this server "
         "(GET /api/remove?url= without REMOVE_URL_FETCH)",
    404: "no such job, upload or file",
    408: "the body stalled or came slower than MIN_UPLOAD_RATE; a tus PATCH keeps what arrived",
    409: "conflict with the job's or upload's state",
    410: "gone: the job was cancelled",
    412: "precondition failed: send `Tus-Resumable: 1.0.0`",
    413: "too large",
    415: "unsupported media type",
    429: "quota reached: too many jobs (or open uploads) for this key",
    422: "a parameter is missing, wrong, or asks for what mattepipe cannot do",
    503: "every worker busy and the sync lane full, or none up: see Retry-After",
    502: "a stage behind the gateway did not answer (for /api/remove: the matting stage failed)",
    460: "checksum mismatch: the chunk was damaged on the way; send it again",
    507: "not enough disk space",
}


def errors(*codes: int) -> Responses:
    """`responses=` entries for error answers, each `{"detail": "..."}`."""
    return {code: {"model": ErrorDetail, "description": _WHY.get(code, "error")} for code in codes}


def headers(description: str, **names: str) -> dict[str, Any]:
    """A bodiless answer that says what it says in headers: `headers("...", Location="...")`
    (keyword names with `_` for `-`)."""
    return {
        "description": description,
        "headers": {
            name.replace("_", "-"): {"description": why, "schema": {"type": "string"}}
            for name, why in names.items()
        },
    }
