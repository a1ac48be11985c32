"""schemathesis over a running service's OpenAPI schema: every operation, a bounded number of
generated cases each; no answer may be a 5xx (but a 503 with Retry-After: backpressure), and
every refusal must carry a JSON `detail`."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

__all__ = ["EXAMPLES", "fuzz_service"]

EXAMPLES = 15
"""Cases per operation and run: enough to reach every parameter's edges, small enough for
`make test`."""


def _check(case: Any, url: str, headers: dict[str, str],
           codes: list[tuple[str, int]]) -> None:
    response = case.call(base_url=url, headers=headers, timeout=30)
    codes.append((case.path, response.status_code))
    where = f"{case.method} {case.formatted_path}"
    # 503 with Retry-After is designed backpressure, not a failure: `/api/remove` answers it
    # when no matting worker can take the image now (the fuzzed gateway has none at all)
    busy = response.status_code == 503 and "retry-after" in response.headers
    assert response.status_code < 500 or busy, (where, response.text[:300])
    if (400 <= response.status_code < 500 or busy) and case.method.upper() != "HEAD":
        body = response.json()
        assert isinstance(body, dict) and "detail" in body, (where, response.text[:300])


def fuzz_service(url: str, headers: dict[str, str], schema_headers: dict[str, str] | None = None,
                 min_operations: int = 1) -> list[tuple[str, int]]:
    """Fuzz every operation of the service at `url`, sending `headers`; the schema itself is
    read with `schema_headers` (an internal service serves it only with its token). Returns
    (path template, status code) of every call, so a caller can check what was reached."""
    doc = httpx.get(f"{url}/openapi.json", headers=schema_headers or headers, timeout=30)
    doc.raise_for_status()
    schema = schemathesis.openapi.from_dict(doc.json())
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= min_operations, [op.label for op in ops]
    codes: list[tuple[str, int]] = []
    for op in ops:

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            _check(case, url, headers, codes)

        run()
    assert len(codes) >= len(ops)
    return codes
