"""The gateway's refusals as domain exceptions, mapped to HTTP answers in one place.

Domain modules (gateway.intake, gateway.db, …) raise these and never import FastAPI; the one
handler (`gateway.api.errors`, registered by `gateway.app`) turns each into `{"detail": ...}`
JSON with the status and headers it carries (Retry-After for a quota, Tus-Resumable and
friends for a tus answer), the same answer FastAPI's own HTTP exception gave. Code that
catches a refusal (the tus sweeper turning uploads into jobs) catches `GatewayError`. The
classes sit in the one tree of `shared.errors`.
"""

from __future__ import annotations

from typing import ClassVar

from shared.errors import MattepipeError

__all__ = [
    "BadGateway",
    "BadRequest",
    "ChecksumMismatch",
    "ClientGone",
    "Conflict",
    "Forbidden",
    "GatewayError",
    "Gone",
    "InsufficientStorage",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "QuotaExceeded",
    "ServiceBusy",
    "Unprocessable",
    "UnsupportedMediaType",
    "UploadStalled",
    "error_for_status",
]


class GatewayError(MattepipeError):
    """A request the gateway refuses: `status_code` and `headers` make the HTTP answer, `detail`
    is what the client reads."""

    status_code: ClassVar[int] = 400

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})


class BadRequest(GatewayError):
    """400: the request is malformed or names something we do not take."""

    status_code = 400


class ClientGone(BadRequest):
    """The client disconnected mid-body (raised by the API's body reader, so that domain code
    need not know Starlette's `ClientDisconnect`)."""

    def __init__(self, detail: str = "the client disconnected") -> None:
        super().__init__(detail)


class UploadStalled(GatewayError):
    """408: the upload body stopped arriving (UPLOAD_IDLE_TIMEOUT_S without a byte) or came
    slower than MIN_UPLOAD_RATE; raised by `gateway.intake.pacing` so that a trickling client
    cannot hold a job slot, a connection and a buffer for ever. The answer closes the
    connection: the rest of the body is never read, and a client still trickling into a kept-
    alive connection would hold it (every byte restarts uvicorn's keep-alive timer)."""

    status_code = 408

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, {"Connection": "close", **(headers or {})})


class NotFound(GatewayError):
    status_code = 404


class Conflict(GatewayError):
    """409: the resource is in a state that does not allow this (busy, used, unfinished)."""

    status_code = 409


class Gone(GatewayError):
    status_code = 410


class PreconditionFailed(GatewayError):
    """412: e.g. a tus request without the protocol version we speak."""

    status_code = 412


class PayloadTooLarge(GatewayError):
    status_code = 413


class UnsupportedMediaType(GatewayError):
    status_code = 415


class QuotaExceeded(GatewayError):
    """429: the key is at one of its job quotas; `retry_after` is whole seconds (at least 1)
    until one more job would fit, sent as `Retry-After`."""

    status_code = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class ChecksumMismatch(GatewayError):
    """460, tus's checksum extension: the body's digest differs from `Upload-Checksum`."""

    status_code = 460


class InsufficientStorage(GatewayError):
    """507: DATA_DIR would drop below MIN_FREE_DISK."""

    status_code = 507


# --- the synchronous API's refusals (`POST /api/remove`) ---------------------------------
class Forbidden(GatewayError):
    """403: the request is understood but switched off here (`?url=` without REMOVE_URL_FETCH)."""

    status_code = 403


class Unprocessable(GatewayError):
    """422: the request is well formed but asks for something the engines cannot do (a rembg
    option mattepipe has no equivalent for)."""

    status_code = 422


class ServiceBusy(GatewayError):
    """503: every worker is busy and the sync lane is full; `Retry-After` says when to ask
    again."""

    status_code = 503

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class BadGateway(GatewayError):
    """502: the matting stage failed on a request the gateway made for the caller."""

    status_code = 502


_BY_STATUS: dict[int, type[GatewayError]] = {
    cls.status_code: cls
    for cls in (BadRequest, UploadStalled, NotFound, Conflict, Gone, PreconditionFailed,
                PayloadTooLarge, UnsupportedMediaType, ChecksumMismatch, InsufficientStorage)
}


def error_for_status(status: int, detail: str, headers: dict[str, str] | None = None
                     ) -> GatewayError:
    """The refusal class for `status` (for protocol code that speaks in status codes, such as
    tus); KeyError for a status no refusal uses."""
    return _BY_STATUS[status](detail, headers)
