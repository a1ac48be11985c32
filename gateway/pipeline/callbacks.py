"""The job-end webhook: one JSON POST per finished job, signed, retried with backoff.

The signature lets the receiver check the body came from this gateway: header
`X-Mattepipe-Signature: sha256=<hex HMAC-SHA256 of the raw body with CALLBACK_SECRET>`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx

from shared.timing import BACKOFF_BASE_S, CALLBACK_ATTEMPTS, CALLBACK_TIMEOUT_S

__all__ = ["SIGNATURE_HEADER", "send_callback", "sign", "valid_callback_url"]

SIGNATURE_HEADER = "X-Mattepipe-Signature"
log = logging.getLogger("gateway.pipeline.callbacks")


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def valid_callback_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


async def send_callback(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    secret: str | None,
    *,
    attempts: int = CALLBACK_ATTEMPTS,
    backoff_base: float = BACKOFF_BASE_S,
) -> bool:
    """POST `payload`; True once the receiver answered 2xx, False after the last attempt.

    A 4xx other than 408/429 is the receiver refusing for good, so it is not retried.
    """
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "mattepipe-gateway"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    for attempt in range(attempts):
        try:
            r = await client.post(url, content=body, headers=headers, timeout=CALLBACK_TIMEOUT_S)
            if r.is_success:
                return True
            log.warning("callback %s answered %s (attempt %d)", url, r.status_code, attempt + 1)
            if 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                return False
        except httpx.HTTPError as exc:
            log.warning("callback %s failed: %r (attempt %d)", url, exc, attempt + 1)
        if attempt + 1 < attempts:
            await asyncio.sleep(backoff_base * 2**attempt)
    return False
