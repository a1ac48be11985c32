"""`/status`'s per-stage aggregates (`stages`) are cached for a time that grows with their
scan: a big job's full scan never takes more than STATUS_DETAIL_SCAN_SHARE of the time
(issue 17)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.api.jobs import _cache_details
from gateway.state import GatewayState
from shared.timing import STATUS_DETAIL_SCAN_SHARE, STATUS_DETAIL_TTL_S


@pytest.mark.parametrize("took", [0.0, 0.01, 0.3, 2.0])
def test_stage_details_are_kept_for_their_scan_time_over_the_share(took: float) -> None:
    gw = cast(GatewayState, SimpleNamespace(detail_cache={}))
    stages: dict[str, Any] = {"matting": {"done": 1}}
    before = time.time()
    _cache_details(gw, "j1", "running", stages, took)
    until, state, kept = gw.detail_cache["j1"]
    keep = max(STATUS_DETAIL_TTL_S, took / STATUS_DETAIL_SCAN_SHARE)
    assert before + keep <= until <= time.time() + keep
    assert (state, kept) == ("running", stages)
    # a 100 000-image job's 0.3 s scan: once every 6 s, not every 2 s
    assert (until - before >= 5.9) == (took >= 0.3)
