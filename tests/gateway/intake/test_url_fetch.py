"""`?url=`'s form and address rule (`gateway.intake.url_fetch`), without a network: every
kind of non-public address a URL can name, written the ways an attacker writes them; and a
host name that resolves to loopback is refused at fetch time, before any connection."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.intake.url_fetch import MAX_FETCH_URL_LENGTH, check_fetch_url, fetch_image

REFUSED = [
    "http://127.0.0.1/x.jpg", "http://10.0.0.8/x.jpg", "http://172.16.3.4/x.jpg",
    "http://192.168.1.1/x.jpg", "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/x.jpg", "http://0.0.0.0/x.jpg", "http://[::1]/x.jpg",
    "http://[fe80::1%25eth0]/x.jpg", "http://[fc00::1]/x.jpg", "http://[::ffff:10.0.0.1]/x",
    "http://[2002:c0a8:101::]/x.jpg", "http://[64:ff9b::a00:1]/x.jpg", "http://224.0.0.1/x",
]
MALFORMED = [
    ("ftp://example.com/x.jpg", "http:// or https://"), ("file:///etc/passwd", "http://"),
    ("http:///x.jpg", "name a host"), ("http://u:p@example.com/x", "user name or password"),
    ("http://example.com:99999/x", "not a valid URL"), ("http://exa mple.com/", "spaces"),
    ("http://example.com/" + "a" * MAX_FETCH_URL_LENGTH, "longer than"),
]


@pytest.mark.parametrize("url", REFUSED)
def test_non_public_addresses_are_refused(url: str) -> None:
    why = check_fetch_url(url)
    assert why is not None and "public address" in why, (url, why)
    assert check_fetch_url(url, allow_private=True) is None


@pytest.mark.parametrize(("url", "why"), MALFORMED)
def test_malformed_urls_are_refused_whatever_the_setting(url: str, why: str) -> None:
    for allow in (False, True):
        got = check_fetch_url(url, allow_private=allow)
        assert got is not None and why in got, (url, got)


def test_public_addresses_pass_the_form_check() -> None:
    assert check_fetch_url("https://93.184.216.34/p.jpg") is None
    assert check_fetch_url("https://images.example.com/p.jpg") is None  # resolved at fetch


async def test_a_name_that_resolves_to_loopback_is_refused_before_connecting() -> None:
    with pytest.raises(BadRequest, match=r"resolves to .* is a loopback address"):
        await fetch_image("http://localhost:9/x.jpg", 1000)
