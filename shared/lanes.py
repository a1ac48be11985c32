"""The two lanes of a stage request: bulk (a job's task) and sync (`POST /api/remove`).

The gateway marks a synchronous request with `LANE_HEADER: sync`; the balancer then queues it
in its own bounded lane (SYNC_QUEUE_LIMIT requests waiting, at most SYNC_QUEUE_WAIT_S each)
that takes every free worker slot before any bulk request does (`shared.balancer.pool`). A
person waits on the answer of a sync request; a job's task can wait a batch longer. Without
the header (or with any other value) a request is bulk, as every request was before lanes.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["LANE_HEADER", "Lane", "lane_of"]

LANE_HEADER = "X-Mattepipe-Lane"
"""The internal header that names a stage request's lane (gateway → balancer)."""


class Lane(StrEnum):
    BULK = "bulk"
    SYNC = "sync"


def lane_of(value: str | None) -> Lane:
    """The lane a header value names; anything but `sync` is bulk."""
    return Lane.SYNC if (value or "").strip().lower() == Lane.SYNC else Lane.BULK
