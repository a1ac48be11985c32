"""CORS_ORIGINS on the real gateway under uvicorn: a listed origin's tus preflight is allowed
(with the headers tus sends and reads), any other origin gets no CORS header, and by default
no answer carries any."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.api.cors import ALLOWED_HEADERS
from tests.support.gateway import Gateway

Start = Callable[..., Gateway]
APP = "https://app.example"
TUS_REQUEST = ["Authorization", "Tus-Resumable", "Upload-Length", "Upload-Metadata",
               "Upload-Offset", "Upload-Checksum", "Content-Type"]
TUS_ANSWER = ["Location", "Upload-Offset", "Upload-Length", "Upload-Expires", "Tus-Resumable",
              "Tus-Version", "Tus-Extension", "Tus-Max-Size", "Retry-After"]


def preflight(gw: Gateway, origin: str, method: str = "POST") -> dict[str, str]:
    r = gw.client.options("/files/", headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": ", ".join(TUS_REQUEST).lower()})
    return {k.lower(): v for k, v in r.headers.items()}


def cors_headers(headers: dict[str, str]) -> set[str]:
    return {k for k in headers if k.startswith("access-control-")}


def test_a_listed_origin_may_run_tus_from_a_browser(start_gateway: Start) -> None:
    gw = start_gateway(cors_origins=f"{APP}, https://other.example/", api_key="k")
    for method in ("POST", "PATCH", "HEAD", "DELETE"):
        h = preflight(gw, APP, method)
        assert h["access-control-allow-origin"] == APP
        assert method in h["access-control-allow-methods"]
        allowed = {x.strip().lower() for x in h["access-control-allow-headers"].split(",")}
        assert {x.lower() for x in TUS_REQUEST} <= allowed
        assert "access-control-allow-credentials" not in h  # a bearer key, never cookies
    assert preflight(gw, "https://other.example")["access-control-allow-origin"] == \
        "https://other.example"
    # an actual answer to that origin exposes what tus reads (a refusal too: no key sent)
    r = gw.client.post("/files/", headers={"Origin": APP, "Tus-Resumable": "1.0.0"})
    assert r.status_code == 401
    exposed = {x.strip().lower() for x in r.headers["access-control-expose-headers"].split(",")}
    assert {x.lower() for x in TUS_ANSWER} <= exposed


@pytest.mark.parametrize("origins", [f"{APP}", ""], ids=["another-origin", "default"])
def test_other_origins_and_the_default_get_no_cors_headers(start_gateway: Start,
                                                           origins: str) -> None:
    gw = start_gateway(cors_origins=origins)
    assert not cors_headers(preflight(gw, "https://evil.example"))
    refused = gw.client.options("/files/", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    if origins:  # refused like any bad request: a JSON detail, not Starlette's plain text
        assert refused.status_code == 400 and "CORS" in refused.json()["detail"]
    r = gw.client.get("/health", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and not cors_headers(dict(r.headers))
    if not origins:  # default: not even the would-be app's origin
        assert not cors_headers(preflight(gw, APP))


def test_calls_without_an_origin_are_served_as_ever(start_gateway: Start) -> None:
    """curl, the CLI and health checks send no Origin: with CORS_ORIGINS set they still get
    their answers (found on the real stack: the gateway never became healthy)."""
    gw = start_gateway(cors_origins=APP)
    r = gw.client.get("/health")
    assert r.status_code == 200 and not cors_headers(dict(r.headers))
    assert gw.client.get("/models").status_code == 200


def test_the_allowed_headers_cover_tus() -> None:
    assert {x.lower() for x in TUS_REQUEST} <= {x.lower() for x in ALLOWED_HEADERS}
