"""Every timing constant of the pipeline, in one place, so their relations stay visible."""

from __future__ import annotations

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "BALANCER_QUEUE_WAIT_S",
    "BALANCER_REQUEST_TIMEOUT_S",
    "BALANCER_RETRY_AFTER_S",
    "CALLBACK_TIMEOUT_S",
    "EVENTS_HEARTBEAT_S",
    "EVENTS_MIN_INTERVAL_S",
    "EVENTS_SEND_TIMEOUT_S",
    "FOLLOW_OUTAGE_S",
    "GATEWAY_SWITCH_INTERVAL_S",
    "GRACEFUL_SHUTDOWN_S",
    "HEALTH_CHECK_INTERVAL_S",
    "HEALTH_CHECK_TIMEOUT_S",
    "HEARTBEAT_INTERVAL_S",
    "INGEST_CHILD_STOP_WAIT_S",
    "INGEST_CHILD_TICK_S",
    "KEEP_ALIVE_S",
    "LEASE_S",
    "MAINTENANCE_INTERVAL_S",
    "MODEL_DOWNLOAD_RETRY_S",
    "MODEL_DOWNLOAD_TIMEOUT_S",
    "QUOTA_RETRY_AFTER_S",
    "REMOVE_STAGE_TIMEOUT_S",
    "REMOVE_URL_TIMEOUT_S",
    "SCHEDULER_IDLE_BACKOFF",
    "SCHEDULER_IDLE_S",
    "SQLITE_BUSY_TIMEOUT_MS",
    "STAGE_CONNECT_TIMEOUT_S",
    "STAGE_PAUSE_BASE_S",
    "STAGE_PAUSE_MAX_S",
    "STAGE_REQUEST_TIMEOUT_S",
    "STATE_MAX_AGE_S",
    "STATUS_DETAIL_SCAN_SHARE",
    "STATUS_DETAIL_TTL_S",
    "STATUS_POLL_S",
    "TUS_AUTOJOB_GRACE_S",
    "TUS_EXPIRY_S",
    "TUS_LOCK_WAIT_S",
    "TUS_SWEEP_INTERVAL_S",
    "UPLOAD_LOCK_POLL_S",
    "UPLOAD_RETRIES",
    "UPLOAD_RETRY_BASE_S",
    "UPLOAD_RETRY_MAX_S",
    "WORKER_STALE_S",
]

HEARTBEAT_INTERVAL_S = 2.0
"""How often a worker announces itself to its balancer."""
WORKER_STALE_S = 3 * HEARTBEAT_INTERVAL_S
"""A heartbeat-only worker not heard from for this long is dropped by the balancer."""
HEALTH_CHECK_INTERVAL_S = 1.0
"""How often the balancer probes each worker's /health."""
BALANCER_QUEUE_WAIT_S = 30.0
"""How long a request may wait in the balancer's queue for a free worker before 503."""
STAGE_REQUEST_TIMEOUT_S = 300.0
"""The gateway's HTTP timeout for one stage call (batching and big images included)."""
LEASE_S = STAGE_REQUEST_TIMEOUT_S + 60.0
"""A dispatched task whose answer never came goes back to pending after this."""
BACKOFF_BASE_S = 1.0
"""First retry delay; doubles with every attempt."""
BACKOFF_MAX_S = 60.0
SCHEDULER_IDLE_S = 0.2
"""How long the scheduler sleeps when there is nothing to claim (the first time: see
SCHEDULER_IDLE_BACKOFF)."""
SCHEDULER_IDLE_BACKOFF = 10
"""An idle stage loop doubles its sleep after each empty claim up to this many times
SCHEDULER_IDLE_S (2 s): work this gateway makes wakes it at once, so the poll is only the
fallback for work it is not told of (issue 17: an idle gateway claimed ten times a second)."""
CALLBACK_TIMEOUT_S = 10.0
"""How long one webhook attempt may take, name resolution included (its only deadline)."""
MAINTENANCE_INTERVAL_S = 1.0
"""How often the scheduler requeues due retries, reclaims expired leases and closes jobs."""
SQLITE_BUSY_TIMEOUT_MS = 30_000
"""SQLite's busy handler waits this long (ms) for a lock before failing: the gateway's own
writes queue on its asyncio write lock, so this only covers an outside reader (a backup,
`sqlite3` by hand) holding the file."""
STAGE_PAUSE_BASE_S = 0.25
"""First pause of a stage whose API is unreachable or saturated; doubles per round of probing
up to STAGE_PAUSE_MAX_S (short: a balancer restart is usually over in well under a second)."""
STAGE_PAUSE_MAX_S = 10.0
"""Longest pause of a stage whose API is unreachable or saturated (503) before trying again."""
STATUS_DETAIL_TTL_S = 2.0
"""How long `/status` reuses its per-stage timing aggregates (a full scan of the job's rows),
at least: a big job's are kept longer (`STATUS_DETAIL_SCAN_SHARE`)."""
STATUS_DETAIL_SCAN_SHARE = 0.05
"""The most of the time a running job's stage aggregates may spend scanning its rows: they
are kept for their last scan's time ÷ this share when that is longer than
STATUS_DETAIL_TTL_S. A 100 000-image job's scan takes ~0.3 s; every 2 s that was 15 % of a
core for as long as anyone watched it (issue 17); now it is refreshed every ~6 s."""
GRACEFUL_SHUTDOWN_S = 10.0
"""On SIGTERM a service stops accepting and gives in-flight requests this long to finish."""
KEEP_ALIVE_S = 10
"""uvicorn closes a kept-alive connection idle this long between requests: long enough for a
poller (`/status` every second, the web page), short enough that idle sockets do not hold the
MAX_CONNECTIONS slots."""
HEALTH_CHECK_TIMEOUT_S = 2.0
"""A worker whose /health does not answer within this is marked unhealthy."""
STAGE_CONNECT_TIMEOUT_S = 3.0
"""Connect timeout balancer → worker; a refused or hung connect fails over to another worker."""
BALANCER_REQUEST_TIMEOUT_S = STAGE_REQUEST_TIMEOUT_S - BALANCER_QUEUE_WAIT_S - 10.0
"""Balancer → worker read timeout: queue wait plus this stays inside the gateway's timeout,
so the gateway hears a clear 504 instead of timing out itself."""
BALANCER_RETRY_AFTER_S = 2
"""Retry-After (seconds) on a balancer's 503: no healthy worker, or its queue is full."""
REMOVE_URL_TIMEOUT_S = 20.0
"""How long `GET /api/remove?url=` may spend fetching the image, resolution and redirects
included (one deadline over all of it)."""
REMOVE_STAGE_TIMEOUT_S = 120.0
"""How long `/api/remove` waits for the matting stage's answer (the lane's wait included)."""
QUOTA_RETRY_AFTER_S = 30
"""Retry-After (seconds) on a 429 for too many concurrent jobs: a job's end cannot be foretold."""
TUS_EXPIRY_S = 24 * 3600.0
"""A resumable upload lives this long after its last PATCH (or its completion) unless it
becomes a job; then the sweeper deletes its row and bytes."""
TUS_SWEEP_INTERVAL_S = 300.0
"""How often the gateway deletes expired uploads and turns finished `autojob` uploads into jobs."""
TUS_AUTOJOB_GRACE_S = 60.0
"""A finished `autojob` upload waits this long for its client's own `POST /jobs` before the
sweeper creates the job from the upload's metadata."""
TUS_LOCK_WAIT_S = 10.0
"""How long a PATCH (or `POST /jobs`) waits for another request on the same upload before 409."""
UPLOAD_RETRIES = 8
"""CLI upload: failed chunk sends in a row (network, 5xx, conflict) before giving up."""
UPLOAD_RETRY_BASE_S = 0.5
"""CLI upload: first pause before resending a chunk; doubles with every failure."""
UPLOAD_RETRY_MAX_S = 30.0
STATUS_POLL_S = 1.0
"""How often the CLI asks /status while it follows a job."""
STATE_MAX_AGE_S = 30 * 24 * 3600.0
"""CLI: a resume state untouched for this long is removed (its upload expired long ago)."""
FOLLOW_OUTAGE_S = 120.0
"""CLI: how long `run`/`wait` keep polling a gateway that does not answer (or answers 5xx)."""
EVENTS_MIN_INTERVAL_S = 0.5
"""A live progress stream reads its job at most this often, however many writes wake it: a
busy gateway commits many times a second, and one read per half second is what a fast poller
of `/status` would cost."""
EVENTS_HEARTBEAT_S = 15.0
"""A live progress stream sends a comment line this often, so proxies and load balancers with
idle timeouts (commonly 30-60 s) keep it open while nothing changes."""
EVENTS_SEND_TIMEOUT_S = 30.0
"""A live progress stream whose client takes no bytes for this long is closed (its slot of
MAX_EVENT_STREAMS freed): a stalled reader cannot hold one for ever."""
MODEL_DOWNLOAD_TIMEOUT_S = 30.0
"""A model download waits this long to connect, and for each next byte: a stalled mirror is
dropped and the download resumed (HTTP Range) instead of hanging a worker for ever."""
MODEL_DOWNLOAD_RETRY_S = 1.0
"""First pause before a cut model download is resumed; doubles with every failure, up to 8×."""
UPLOAD_LOCK_POLL_S = 0.05
"""How often a request waiting for a tus upload that another gateway holds asks again."""

GATEWAY_SWITCH_INTERVAL_S = 0.001
"""The gateway's `sys.setswitchinterval` (CPython's default is 0.005): how long a thread may
keep the GIL while another waits for it. The gateway's event loop, woken by a request, waits
for the GIL behind its ingest and database threads; each turn they take before the loop gets
it is at most this long (README, "`/status` while a big job runs")."""
INGEST_CHILD_STOP_WAIT_S = 5.0
"""A cancelled ingest's child process gets this long after SIGTERM to stop its ingest (as an
in-process one would be cancelled) before SIGKILL (`gateway.intake.ingest_process`)."""
INGEST_CHILD_TICK_S = 0.5
"""While an ingest runs in its child process the gateway signals a write this often (the
live progress streams sleep on the gateway's own writes, which the child's are not)."""
