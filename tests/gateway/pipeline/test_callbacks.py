"""The webhook's URL and address rules, and one attempt against a real receiver over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from gateway.pipeline.callbacks import (
    SIGNATURE_HEADER,
    WebhookSender,
    address_refusal,
    check_callback_url,
)
from tests.support.servers import ThreadServer

REFUSED_AT_CREATION = [
    ("http://127.0.0.1/", "loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://192.168.1.1:8080/x", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://100.64.0.1/", "CGNAT"),
    ("http://[::1]/", "loopback"),
    ("http://[fc00::1]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:10.1.2.3]/", "private"),
    ("http://[2002:a9fe:a9fe::]/", "link-local"),  # 6to4 for 169.254.169.254
    ("http://[64:ff9b::a00:1]/", "private"),  # NAT64 for 10.0.0.1
    ("http://224.0.0.1/", "multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://240.0.0.1/", "reserved"),
    ("http://user:pw@example.com/", "user name or password"),
    ("http://user@example.com/", "user name or password"),
    ("http://[::1", "not a valid URL"),
    ("http://example.com:99999/", "not a valid URL"),
    ("http://example.com:0/", "port"),
    ("ftp://example.com/", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("http:///x", "host"),
    ("http://example.com/a\nb", "control characters"),
    ("http://example.com/" + "a" * 2100, "longer than"),
]


@pytest.mark.parametrize(("url", "needle"), REFUSED_AT_CREATION)
def test_bad_callback_urls_are_refused_with_a_reason(url: str, needle: str) -> None:
    why = check_callback_url(url)
    assert why is not None and needle in why and why.startswith("callback_url")


@pytest.mark.parametrize("url", ["https://example.com/hook", "http://example.com:8080/h?x=1",
                                 "http://8.8.8.8/", "http://[2606:4700::1]/", "http://münchen.de/"])
def test_public_urls_pass(url: str) -> None:
    assert check_callback_url(url) is None


def test_allow_private_lifts_the_address_rule_only() -> None:
    assert check_callback_url("http://127.0.0.1:8000/", allow_private=True) is None
    assert check_callback_url("http://10.0.0.1/", allow_private=True) is None
    assert check_callback_url("http://u:p@127.0.0.1/", allow_private=True) is not None
    assert check_callback_url("http://[::1", allow_private=True) is not None


@pytest.mark.parametrize("addr", ["127.0.0.2", "10.1.1.1", "172.16.0.1", "192.168.0.1",
                                  "169.254.1.1", "100.127.255.255", "::", "::1", "fd00::1",
                                  "fe80::1", "ff02::1", "::ffff:192.168.0.1", "0.0.0.0",
                                  "255.255.255.255", "fec0::1"])
def test_internal_addresses_are_refused(addr: str) -> None:
    assert address_refusal(ipaddress.ip_address(addr)) is not None


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "100.128.0.1", "2606:4700::1111",
                                  "::ffff:8.8.8.8"])
def test_public_addresses_pass(addr: str) -> None:
    assert address_refusal(ipaddress.ip_address(addr)) is None


@dataclass
class Receiver:
    url: str = ""
    got: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> dict[str, str]:
        rec.got.append(("/hook", await request.body(), dict(request.headers)))
        return {"ok": "yes"}

    @app.post("/moved")
    async def moved(request: Request) -> RedirectResponse:
        rec.got.append(("/moved", await request.body(), dict(request.headers)))
        return RedirectResponse("/hook", status_code=307)

    @app.post("/gone")
    async def gone(request: Request) -> JSONResponse:
        rec.got.append(("/gone", await request.body(), dict(request.headers)))
        return JSONResponse({"detail": "no"}, status_code=410)

    with ThreadServer(app) as srv:
        rec.url = f"http://localhost:{srv.port}"
        yield rec


async def test_a_name_resolving_to_loopback_is_refused_at_send(receiver: Receiver) -> None:
    # "localhost" passes the creation check (it is a name); its addresses are not public
    assert check_callback_url(f"{receiver.url}/hook") is None
    sender = WebhookSender(secret="s")
    try:
        attempt = await sender.post(f"{receiver.url}/hook", {"job_id": "j"})
    finally:
        await sender.aclose()
    assert not attempt.delivered and attempt.final
    assert "localhost resolves to" in (attempt.error or "") and "loopback" in (attempt.error or "")
    assert receiver.got == []


async def test_allowed_private_receiver_gets_the_signed_body_with_its_host(
    receiver: Receiver,
) -> None:
    sender = WebhookSender(secret="s3cret", allow_private=True)
    try:
        attempt = await sender.post(f"{receiver.url}/hook", {"job_id": "j", "n": 1})
    finally:
        await sender.aclose()
    assert attempt.delivered and attempt.error is None
    ((path, body, headers),) = receiver.got
    assert path == "/hook"
    assert json.loads(body) == {"job_id": "j", "n": 1}
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER.lower()] == expected
    # connected to the resolved address, but the Host header is the URL's own
    assert headers["host"] == receiver.url.removeprefix("http://")


async def test_redirects_are_not_followed(receiver: Receiver) -> None:
    sender = WebhookSender(secret=None, allow_private=True)
    try:
        attempt = await sender.post(f"{receiver.url}/moved", {})
    finally:
        await sender.aclose()
    assert not attempt.delivered and attempt.final and "307" in (attempt.error or "")
    assert [g[0] for g in receiver.got] == ["/moved"]


async def test_a_4xx_is_final_and_nothing_ever_raises(receiver: Receiver) -> None:
    sender = WebhookSender(secret=None, allow_private=True)
    try:
        gone = await sender.post(f"{receiver.url}/gone", {})
        # URLs the creation check never let through, or that fail only when sent: each is an
        # attempt's error, never an exception
        odd = [await sender.post(u, {}) for u in
               ("http://127.0.0.1:99999/", "http://a..b/", "http://[::1", "gopher://x/")]
    finally:
        await sender.aclose()
    assert gone.final and "410" in (gone.error or "")
    assert all(not a.delivered and a.error for a in odd)
    assert "UnicodeError" in (odd[1].error or "")
