"""schemathesis against the running gateway: whatever its schema lets a client send — and
what it does not — no answer is a 5xx, and every refusal carries a JSON `detail`.

The gateway runs for real (uvicorn in a thread, its scheduler pointed at a closed port), once
with an API key and once open; the fuzzer sends the key in the first case, so both the
refusals of bad input behind the key and the open surface are exercised.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from gateway.app import create_app
from tests.support.gateway import make_settings
from tests.support.servers import ThreadServer

KEY = "fuzz-key"
EXAMPLES = 15
"""Cases per operation and variant: enough to reach every parameter's edges, small enough
for `make test` (the whole run takes well under a minute here)."""


VARIANTS = {
    "key": (KEY, KEY),
    "wrong-key": (KEY, "not-the-key"),
    "open": (None, None),
}
"""(the gateway's key, the key the fuzzer sends)."""


@pytest.fixture(scope="module", params=list(VARIANTS))
def gateway(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    key, sent = VARIANTS[request.param]
    data_dir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    s = make_settings(data_dir, api_key=key, max_concurrent_jobs=0,
                      max_jobs_per_hour=0, max_jobs_per_day=0)
    headers = {"Authorization": f"Bearer {sent}"} if sent else {}
    with ThreadServer(create_app(s)) as srv:
        yield srv.url, headers


def operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def check(case: Any, url: str, headers: dict[str, str], codes: list[int]) -> None:
    response = case.call(base_url=url, headers=headers, timeout=30)
    codes.append(response.status_code)
    where = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, (where, response.text[:300])
    if 400 <= response.status_code < 500 and case.method.upper() != "HEAD":
        body = response.json()
        assert isinstance(body, dict) and "detail" in body, (where, response.text[:300])


def test_no_server_error_and_every_refusal_explains(gateway: tuple[str, dict[str, str]]) -> None:
    url, headers = gateway
    ops = operations(url)
    assert len(ops) >= 15, [op.label for op in ops]  # every public operation is fuzzed
    codes: list[int] = []
    for op in ops:

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            check(case, url, headers, codes)

        fuzz()
    assert len(codes) >= len(ops)
    assert any(c < 300 for c in codes) or headers.get("Authorization") == "Bearer not-the-key"


def test_an_offset_past_64_bits_is_refused_not_a_crash(
        gateway: tuple[str, dict[str, str]]) -> None:
    """Found by the fuzz run: `offset=2**63` reached SQLite and came back as a 500."""
    url, headers = gateway
    for path in ("/jobs", "/jobs/nope/tasks", "/jobs/nope/gallery"):
        r = httpx.get(f"{url}{path}", params={"offset": 2**63}, headers=headers)
        assert r.status_code in (401, 422), (path, r.status_code, r.text)
        assert "detail" in r.json()
