"""The job-end webhook: one JSON POST per finished job, signed, to a public address only.

The signature lets the receiver check the body came from this gateway: header
`X-Mattepipe-Signature: sha256=<hex HMAC-SHA256 of the raw body with CALLBACK_SECRET>`.

`callback_url` comes from whoever uploads, so it is treated as hostile (docs/guarantees.md,
"Threat model", "Webhooks"):

- at job creation the URL must parse, be http/https with a host, carry no userinfo (it would
  become Basic auth to some internal service) and a port in range; a literal IP must be
  public (`check_callback_url`);
- at send time the host is resolved once, off the event loop, and every address it resolves
  to must be public (`address_refusal`): not loopback, private, link-local, CGNAT, multicast,
  reserved or unspecified, nor an IPv6 form that embeds such an IPv4 address. The request
  then goes to that checked address itself, with the original `Host` header and TLS server
  name, so a second DNS answer (rebinding) cannot send it elsewhere. Redirects are not
  followed. `CALLBACK_ALLOW_PRIVATE=1` lifts the address rule (a receiver on the same host
  or LAN);
- webhooks have their own HTTP client (`WebhookSender`): own small pool, no keep-alive (a
  connection made for one host name is never reused for another that shares its address),
  no proxy from the environment, one deadline per attempt, and the receiver's body is never
  read;
- every failure of an attempt, whatever it raises, ends that attempt (`Attempt`); the
  scheduler counts attempts in the database and gives up for good after
  `CALLBACK_MAX_ATTEMPTS`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from shared.timing import CALLBACK_TIMEOUT_S

__all__ = [
    "MAX_CALLBACK_URL_LENGTH",
    "SIGNATURE_HEADER",
    "WEBHOOK_MAX_CONNECTIONS",
    "Attempt",
    "WebhookSender",
    "address_refusal",
    "check_callback_url",
    "check_outbound_url",
    "resolve_addresses",
    "sign",
    "valid_callback_url",
]

SIGNATURE_HEADER = "X-Mattepipe-Signature"
MAX_CALLBACK_URL_LENGTH = 2048
"""The jobs table's `callback_url` column width; a longer URL is refused at creation."""
WEBHOOK_MAX_CONNECTIONS = 4
"""Webhook POSTs at once (the rest wait for the pool): job ends are rare, and a slow
receiver must not hold more of the gateway than this."""
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
"""Shared address space (RFC 6598): carrier NAT, also used for cluster-internal networks."""
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""Well-known NAT64 prefix: the last 32 bits are the IPv4 address actually reached."""
_RETRYABLE_4XX = (408, 429)

log = logging.getLogger("gateway.pipeline.callbacks")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- addresses ---------------------------------------------------------------------------
def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any: it is that
    address a connection ends up at, so it is the one to check."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why a webhook may not go to `ip` (a phrase like "127.0.0.1 is a loopback address"),
    or None for a public unicast address.

    `is_global` covers loopback, RFC 1918, fc00::/7, link-local, documentation, reserved and
    unspecified ranges; CGNAT (100.64/10) and multicast are named on their own because
    Python counts some of them as global."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return f"{ip} is a scoped (link-local) address"
        inner = _embedded_ipv4(ip)
        if inner is not None:
            why = address_refusal(inner)
            return None if why is None else f"{ip} stands for {why}"
    kind = _kind(ip)
    return None if kind is None else f"{ip} is {kind}"


def _kind(ip: IPAddress) -> str | None:
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a shared (CGNAT) address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a special-purpose address"
    return None


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# --- creation-time check -----------------------------------------------------------------
def check_outbound_url(url: str, *, what: str, max_length: int,
                       allow_private: bool = False) -> str | None:
    """Why the gateway must not send a request to `url`, or None when its form may be sent to
    (a literal address is checked here; a name's addresses at every send). `what` names the
    parameter in the answer: a webhook's `callback_url`, `/api/remove`'s `url`."""
    if len(url) > max_length:
        return f"{what} is longer than {max_length} characters"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return f"{what} must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:  # httpx.InvalidURL is no ValueError
        return f"{what} is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"{what} must be an http:// or https:// URL"
    if not parts.hostname:
        return f"{what} must name a host"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return f"{what} must not contain a user name or password"
    if port is not None and not 1 <= port <= 65535:
        return f"{what}'s port must be between 1 and 65535"
    ip = _literal_ip(parts.hostname)
    if ip is not None and not allow_private:
        why = address_refusal(ip)
        if why is not None:
            return f"{what} must be a public address: {why}"
    return None


def check_callback_url(url: str, *, allow_private: bool = False) -> str | None:
    """Why `url` cannot be a job's webhook, or None when it can (at creation; the resolved
    addresses are checked again at every send, see `WebhookSender.post`)."""
    return check_outbound_url(url, what="callback_url", max_length=MAX_CALLBACK_URL_LENGTH,
                              allow_private=allow_private)


def valid_callback_url(url: str, *, allow_private: bool = False) -> bool:
    return check_callback_url(url, allow_private=allow_private) is None


# --- sending -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Attempt:
    """One webhook POST's outcome. `final`: trying again cannot help (the URL or its address
    is not allowed, or the receiver answered a redirect or a 4xx other than 408/429)."""

    delivered: bool
    error: str | None = None
    final: bool = False


async def resolve_addresses(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to; `loop.getaddrinfo` runs in the default executor,
    so a slow resolver never blocks the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    out: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]))
        if ip not in out:
            out.append(ip)
    return out


class WebhookSender:
    """The webhooks' own HTTP client (never the stage calls' one): small pool, no keep-alive,
    no redirects, no proxy from the environment. `aclose()` when done."""

    def __init__(
        self,
        *,
        secret: str | None,
        allow_private: bool = False,
        timeout: float = CALLBACK_TIMEOUT_S,
        max_connections: int = WEBHOOK_MAX_CONNECTIONS,
    ) -> None:
        self.secret, self.allow_private, self.timeout = secret, allow_private, timeout
        self.client = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=0),
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def body(self, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The exact bytes posted and their headers (the signature is over these bytes)."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "mattepipe-gateway"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(body, self.secret)
        return body, headers

    async def post(self, url: str, payload: dict[str, Any]) -> Attempt:
        """One attempt, within one deadline (resolution included). Never raises but for
        cancellation: whatever goes wrong is the attempt's `error`."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(url, payload)
        except TimeoutError:
            return Attempt(False, f"no answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return Attempt(False, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a URL httpx refuses at send time, a resolver oddity, ...
            return Attempt(False, f"{type(exc).__name__}: {exc}")

    async def _post(self, url: str, payload: dict[str, Any]) -> Attempt:
        why = check_callback_url(url, allow_private=self.allow_private)
        if why is not None:  # a row written before these checks existed, or by hand
            return Attempt(False, why, final=True)
        target = httpx.URL(url)
        host = target.raw_host.decode("ascii")  # IDNA-encoded: what DNS and TLS are given
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            addresses = await resolve_addresses(host, port)
        except OSError as exc:  # socket.gaierror: may be a passing resolver failure
            return Attempt(False, f"cannot resolve {host}: {exc}")
        if not addresses:
            return Attempt(False, f"{host} resolves to no address")
        if not self.allow_private:
            for ip in addresses:
                why = address_refusal(ip)
                if why is not None:
                    return Attempt(False, f"{host} resolves to {why}", final=True)
        body, headers = self.body(payload)
        headers["Host"] = target.netloc.decode("ascii")
        refused: httpx.ConnectError | None = None
        for ip in addresses:  # in the resolver's order, as a plain connect would
            # The checked address is the one connected to: no second lookup by the client.
            request = self.client.build_request(
                "POST", target.copy_with(host=str(ip)), content=body, headers=headers,
                extensions={"sni_hostname": host},
            )
            try:
                response = await self.client.send(request, stream=True)
            except httpx.ConnectError as exc:  # nothing listens there: try the next one
                refused = exc
                continue
            try:
                status = response.status_code  # the body is never read: it is the receiver's
            finally:
                await response.aclose()
            if 200 <= status < 300:
                return Attempt(True)
            final = 300 <= status < 500 and status not in _RETRYABLE_4XX
            return Attempt(False, f"the receiver answered {status}", final=final)
        return Attempt(False, f"cannot connect to {host}: {refused}")
