"""The client's errors: the server refused (with its `detail`) or could not be reached."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["GatewayError", "ServerError", "TusError", "TusUnsupported", "error_detail"]


class ServerError(RuntimeError):
    """The server answered with an error, or could not be reached (status 0)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


class GatewayError(ServerError):
    """A call of the gateway's API failed."""


class TusError(ServerError):
    """A resumable upload was refused or broke off."""


class TusUnsupported(TusError):
    """The server has no tus endpoint (404/405 on creation)."""


def error_detail(resp: httpx.Response) -> str:
    """What an error answer says: its JSON `detail` (ErrorDetail), else its text, shortened."""
    try:
        body: Any = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else str(detail)
    return str(body)[:500]
