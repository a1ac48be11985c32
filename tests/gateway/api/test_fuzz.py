"""schemathesis against the running gateway: whatever its schema lets a client send — and
what it does not — no answer is a 5xx, and every refusal carries a JSON `detail`.

The gateway runs for real (uvicorn in a thread, its scheduler pointed at a closed port): with
an API key that the fuzzer sends (bad input behind the key), with a key that it gets wrong
(every refusal of the key itself) and open. The internal services get the same treatment in
tests/shared/test_internal_fuzz.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway.app import create_app
from tests.support.fuzz import fuzz_service
from tests.support.gateway import make_settings
from tests.support.servers import ThreadServer

KEY = "fuzz-key"
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


def test_no_server_error_and_every_refusal_explains(gateway: tuple[str, dict[str, str]]) -> None:
    url, headers = gateway
    codes = fuzz_service(url, headers, min_operations=15)  # every public operation
    assert any(c < 300 for _, c in codes) or headers.get("Authorization") == "Bearer not-the-key"


def test_an_offset_past_64_bits_is_refused_not_a_crash(
        gateway: tuple[str, dict[str, str]]) -> None:
    """Found by the fuzz run: `offset=2**63` reached SQLite and came back as a 500."""
    url, headers = gateway
    for path in ("/jobs", "/jobs/nope/tasks", "/jobs/nope/gallery"):
        r = httpx.get(f"{url}{path}", params={"offset": 2**63}, headers=headers)
        assert r.status_code in (401, 422), (path, r.status_code, r.text)
        assert "detail" in r.json()
