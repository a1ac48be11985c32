"""The image of `GET /api/remove?url=`: fetched by the gateway from a public address only.

The URL comes from the caller, so it is treated as the webhooks' URLs are (docs/guarantees.md,
"Threat model"), with the same address rule (`gateway.pipeline.callbacks.address_refusal`,
one implementation): http/https with a host, no userinfo, a port in range; the host is
resolved once, off the event loop, and every address it resolves to must be public (not
loopback, private, link-local, CGNAT, multicast, reserved, unspecified, nor an IPv6 form that
embeds one of those); the connection then goes to that checked address itself, with the
original `Host` header and TLS server name, so a second DNS answer (rebinding) cannot send it
elsewhere. Redirects are followed by hand, at most `MAX_REDIRECTS`, each new URL checked the
same way. The body is read as it arrives and cut at REMOVE_MAX_IMAGE_BYTES (413); the whole
fetch, resolution and redirects included, has one deadline (`REMOVE_URL_TIMEOUT_S`).
`REMOVE_URL_ALLOW_PRIVATE=1` lifts the address rule (tests against 127.0.0.1, a trusted LAN).
No proxy from the environment, no cookies, no keep-alive between fetches.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urljoin

import httpx

from gateway.errors import BadRequest, PayloadTooLarge
from gateway.pipeline.callbacks import address_refusal, check_outbound_url, resolve_addresses
from shared.timing import REMOVE_URL_TIMEOUT_S

__all__ = ["MAX_FETCH_URL_LENGTH", "MAX_REDIRECTS", "check_fetch_url", "fetch_image"]

MAX_REDIRECTS = 5
"""Redirects followed for one `?url=` (rembg's own server follows five)."""
MAX_FETCH_URL_LENGTH = 2048
"""Longest `?url=` taken (as a webhook URL)."""
_REDIRECTS = (301, 302, 303, 307, 308)


def check_fetch_url(url: str, *, allow_private: bool = False) -> str | None:
    """Why `url` cannot be fetched, or None when its form may be (the resolved addresses are
    checked at fetch time): the webhooks' check (`check_outbound_url`), one implementation."""
    return check_outbound_url(url, what="url", max_length=MAX_FETCH_URL_LENGTH,
                              allow_private=allow_private)


async def fetch_image(url: str, max_bytes: int, *, allow_private: bool = False,
                      deadline_s: float = REMOVE_URL_TIMEOUT_S) -> bytes:
    """The body at `url` (at most `max_bytes`), or `BadRequest` / `PayloadTooLarge` saying
    what went wrong; never a request to a refused address."""
    try:
        async with asyncio.timeout(deadline_s), httpx.AsyncClient(
            timeout=deadline_s, follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=0),
        ) as client:
            return await _follow(client, url, max_bytes, allow_private)
    except TimeoutError:
        raise BadRequest(f"url: no image within {deadline_s:g} s") from None
    except httpx.HTTPError as exc:
        raise BadRequest(f"url: fetch failed ({type(exc).__name__})") from None


async def _follow(client: httpx.AsyncClient, url: str, max_bytes: int,
                  allow_private: bool) -> bytes:
    for _ in range(MAX_REDIRECTS + 1):
        why = check_fetch_url(url, allow_private=allow_private)
        if why is not None:
            raise BadRequest(why)
        target = httpx.URL(url)
        host = target.raw_host.decode("ascii")  # IDNA-encoded: what DNS and TLS are given
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            addresses = await resolve_addresses(host, port)
        except OSError:
            raise BadRequest(f"url: cannot resolve {host}") from None
        if not addresses:
            raise BadRequest(f"url: {host} resolves to no address")
        if not allow_private:
            for ip in addresses:
                why = address_refusal(ip)
                if why is not None:
                    raise BadRequest(f"url must be a public address: {host} resolves to {why}")
        # The checked address is the one connected to: no second lookup by the client.
        request = client.build_request(
            "GET", target.copy_with(host=str(addresses[0])),
            headers={"Host": target.netloc.decode("ascii"), "User-Agent": "mattepipe-gateway",
                     "Accept": "image/*"},
            extensions={"sni_hostname": host},
        )
        response = await client.send(request, stream=True)
        try:
            if response.status_code in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise BadRequest("url: a redirect without a Location header")
                url = urljoin(url, location)
                continue
            if response.status_code != 200:
                raise BadRequest(f"url: the server answered {response.status_code}")
            return await _body(response, max_bytes)
        finally:
            await response.aclose()
    raise BadRequest(f"url: more than {MAX_REDIRECTS} redirects")


async def _body(response: httpx.Response, max_bytes: int) -> bytes:
    too_large = PayloadTooLarge(
        f"image larger than the limit of {max_bytes} bytes (REMOVE_MAX_IMAGE_BYTES)")
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)
