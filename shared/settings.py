"""One settings class for all five services, read once per process.

The variable names are those of docs/DESIGN.md ("Configuration") and of the original compose
file, so the same `.env` drives the local stack and the containers.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.icc import ColorManagement
from shared.keys import KeyTable, build_table
from shared.limits import MAX_STAGE_BATCH
from shared.timing import LEASE_S

__all__ = ["Settings", "get_settings"]

GIB = 1024**3


class Settings(BaseSettings):
    # Errors never echo their input: it may be a key (API_KEYS, ADMIN_KEY) or a secret.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False,
                                      hide_input_in_errors=True)

    # --- storage and database -----------------------------------------------------------
    data_dir: Path = Path("./data")
    database_url: str = ""
    """Empty means SQLite at DATA_DIR/mattepipe.db; `postgresql+asyncpg://user:pw@host/db`
    for Postgres (several gateways on one database)."""
    gateway_id: str = ""
    """This gateway's name in the task rows it leases (`tasks.dispatched_by`): a restarting
    gateway releases only its own. Empty: `<hostname>-<pid>` (`gateway_name`). Give each
    gateway of one Postgres a stable, distinct one (a pod name) to release its leases at
    once after a restart instead of waiting for them to expire."""
    storage_url: str = ""
    """Where jobs' files live: empty for the local DATA_DIR, `s3://bucket/prefix` for an
    S3-compatible object store (shared.objects). The database, logs and tus parts in progress
    stay in DATA_DIR either way."""
    s3_endpoint_url: str = ""
    """The S3 endpoint (SeaweedFS, MinIO, R2 ...); empty: AWS itself. Credentials and region
    come from the standard AWS_* variables, not from here."""
    models_dir: Path = Path("./models")
    data_host_path: str = ""
    """docker compose only: the host folder bound at /app/data (empty: ./data beside the
    compose file), so the data does not land in Docker's own folder. No service reads it;
    it is a field so that `.env` (which compose reads too) lists it with the others."""

    # --- service addresses ---------------------------------------------------------------
    host: str = "127.0.0.1"
    """Where the gateway binds (the only public service)."""
    internal_host: str = "127.0.0.1"
    """Where balancers and workers bind: loopback locally, 0.0.0.0 inside containers."""
    gateway_port: int = 8000
    matting_api_port: int = 8001
    comparison_api_port: int = 8002
    matting_worker_port: int = 9001
    """First matting worker's port; the next ones count up."""
    comparison_worker_port: int = 9101
    matting_api_url: str = "http://127.0.0.1:8001"
    comparison_api_url: str = "http://127.0.0.1:8002"
    worker_urls: str = ""
    """Comma-separated static worker list for a balancer (heartbeats add more)."""
    worker_id: str = ""
    public_url: str = ""
    """Where a worker tells its balancer it can be reached (heartbeat); empty: http://host:port."""

    # --- local stack ---------------------------------------------------------------------
    matting_workers: int = 2
    comparison_workers: int = 1

    # --- limits ----------------------------------------------------------------------------
    max_upload_size: int = 100 * GIB
    max_retries: int = 3
    """Attempts per task stage, and ingests per job (a restart redoes an interrupted ingest
    only while fewer were started)."""
    max_archive_members: int = 1_000_000
    max_uncompressed_size: int = 200 * GIB
    """Cap on what an archive unpacks to; the effective limit is
    min(this, MAX_COMPRESSION_RATIO × the archive's bytes), so a small upload gets a small one."""
    max_compression_ratio: float = 200.0
    """Per zip member, and for a whole zip or tar (unpacked total / archive bytes on disk)."""
    max_image_pixels: int = 100_000_000
    """Pixel-bomb guard: an image claiming more pixels than this is rejected unread."""
    color_management: ColorManagement = ColorManagement.KEEP
    """`keep`: a cut-out embeds its input's ICC profile, pixels untouched; `srgb`: pixels are
    converted from the profile to sRGB before matting and the cut-out has none."""
    max_video_seconds: float = Field(default=600.0, gt=0.0)
    """A video longer than this is rejected (checked from the container, then while decoding)."""
    max_video_pixels: int = Field(default=3840 * 2160, gt=0)
    """Pixels per video frame: a larger video is rejected before any frame is decoded."""
    max_video_frames: int = Field(default=20_000, gt=0)
    """Frames (tasks) one video may become; more is a rejected video, not a truncated one."""
    min_free_disk: int = 256 * 1024**2
    """Uploads answer 507, and an archive being unpacked fails, when DATA_DIR would keep less
    free space than this."""

    # --- slow clients and open uploads (docs/guarantees.md, "slow clients and disk") ------
    upload_idle_timeout_s: float = Field(default=60.0, gt=0.0)
    """An upload body that delivers no byte for this long is cut (408; a tus PATCH keeps
    what it wrote)."""
    min_upload_rate: int = Field(default=1024, ge=0)
    """Bytes per second an upload body must average once the grace period is over; 0: off."""
    upload_rate_grace_s: float = Field(default=60.0, ge=0.0)
    """Seconds at the start of a body during which MIN_UPLOAD_RATE is not enforced."""
    max_connections: int = Field(default=1000, ge=1)
    """Connections one service holds at once (uvicorn limit_concurrency); more get 503."""
    max_open_uploads: int = Field(default=10, ge=0)
    """Unfinished resumable (tus) uploads one key may hold at once; 0 means no limit."""
    max_open_upload_bytes: int = Field(default=200 * GIB, ge=0)
    """Sum of the declared Upload-Length of one key's open tus uploads; 0 means no limit."""
    tus_max_lifetime_s: float = Field(default=7 * 86400.0, gt=0.0)
    """A resumable upload's hard deadline after its creation: PATCHes stop extending its
    expiry there and the sweeper removes it."""

    # --- engines and batching --------------------------------------------------------------
    default_model: str = "classical"
    max_batch_size: int = 8
    max_batch_delay_ms: int = 10
    cuda_visible_devices: str | None = None
    gpu_memory_fraction: float = Field(default=0.3, gt=0.0, le=1.0)
    """Of the device the worker sees: the card, under MIG its slice, at most an MPS client's
    cap (`matting_worker.engines.device.gpu_total_memory`)."""
    worker_threads: int = 0
    """CPU threads per worker for decode/encode and engines; 0 means cores / workers."""

    # --- CPU inference for .onnx models (issue 14: rembg's answers, faster) ---------------
    onnx_cpu_runtime: Literal["auto", "openvino", "onnxruntime"] = "auto"
    """Without CUDA: `auto` runs .onnx models on OpenVINO when installed, else onnxruntime."""
    cpu_precision: Literal["auto", "bf16", "f32"] = "auto"
    """OpenVINO's precision: `auto` is bf16 where the CPU has bf16 instructions; f32 is the
    switch for exact float agreement (onnxruntime always runs f32)."""
    openvino_cache_dir: str = "~/.cache/mattepipe/openvino"
    """Where OpenVINO keeps compiled models (keyed by the graph's content), so a worker's or
    `mattepipe matte`'s start skips the compile; empty: no cache."""
    # --- low-confidence fallback (issue 16) --------------------------------------------------
    fallback_model: str | None = None
    """A learned engine (built-in or a file in MODELS_DIR) that takes over an image when the
    weight-free engine's confidence is below FALLBACK_BELOW; unset: no fallback."""
    fallback_below: float = Field(default=0.3, ge=0.0, le=1.0)
    """Confidence under which the weight-free engine's cut-out is redone by FALLBACK_MODEL."""
    # --- models on first use, and in memory (shared/zoo.py, shared/model_fetch.py) ----------
    model_download: bool = False
    """A worker downloads a missing zoo model (`mattepipe models list`) on first use into
    MODELS_DIR; off: such a job's images are rejected with `mattepipe models pull NAME`."""
    model_base_url: str = ""
    """A mirror: zoo models are fetched from `<base>/<file>`; empty: the URLs rembg publishes."""
    model_catalogue: Path | None = None
    """A JSON catalogue replacing the packaged one (`shared/zoo.json`): names, URLs, hashes."""
    max_loaded_models: int = Field(default=4, ge=1)
    """Engines one worker keeps loaded; past it the least recently used is unloaded (its GPU
    memory freed). A request naming more models than this loads them all for its batch."""

    balancer_queue_limit: int = 1000
    """Requests a balancer holds waiting for a free worker; more get 503 + Retry-After."""

    # --- scheduler -------------------------------------------------------------------------
    matting_concurrency: int = 64
    """Matting tasks the gateway keeps in flight (sent STAGE_BATCH_SIZE to a call)."""
    comparison_concurrency: int = 64
    """Comparison tasks the gateway keeps in flight (sent STAGE_BATCH_SIZE to a call)."""
    stage_batch_size: int = Field(default=32, ge=1, le=MAX_STAGE_BATCH)
    """Tasks per stage call (`<route>/batch`); 1: one plain call per task, as before."""
    lease_s: float = Field(default=LEASE_S, gt=0)
    """A dispatched task whose answer never came goes back to pending after this many seconds:
    how soon a dead gateway's tasks are taken over by the others (several gateways)."""

    # --- access ------------------------------------------------------------------------------
    api_key: SecretStr | None = None
    """One tenant (label "default"): every gateway endpoint but /health needs this bearer key."""
    api_keys: SecretStr | None = None
    """Several tenants: `label:key` pairs, comma-separated; each key sees only its own jobs."""
    api_keys_file: Path | None = None
    """Many tenants: a file with one `label:key` a line (`#` comments, blank lines skipped)."""
    admin_key: SecretStr | None = None
    """The key that sees, downloads and cancels every tenant's jobs."""
    max_concurrent_jobs: int = Field(default=4, ge=0)
    """Per API key (or for all callers when API_KEY is unset); 0 means no limit."""
    max_jobs_per_hour: int = Field(default=100, ge=0)
    max_jobs_per_day: int = Field(default=1000, ge=0)
    callback_secret: str | None = None
    callback_allow_private: bool = False
    """Let webhooks reach loopback, private, link-local and CGNAT addresses (same host/LAN)."""
    callback_max_attempts: int = Field(default=5, ge=1)
    """Webhook tries per job (backoff BACKOFF_BASE_S, doubling); then it is marked failed."""

    internal_token: str | None = None
    """Bearer credential of the internal plane (gateway → balancers → workers, heartbeats).
    Balancers and workers refuse to start without it; the local stack generates one."""

    # --- live progress and browsers on other origins ---------------------------------------
    max_event_streams: int = Field(default=100, ge=0)
    """Live progress streams (`GET /jobs/{id}/events`) the gateway holds open at once, all
    keys together; beyond it they answer 429 and clients poll `/status`. 0 turns them off."""
    cors_origins: str = ""
    """Comma-separated origins (`https://app.example`) whose pages may call the API from a
    browser; empty: no CORS headers at all (only the gateway's own page)."""
    # --- agents (MCP, gateway/api/mcp.py) ------------------------------------------------
    mcp_max_image_bytes: int = Field(default=32 * 1024**2, ge=1)
    """Largest image (decoded bytes) the MCP tool `remove_background` takes; its request body
    is capped at the base64 of this plus a little JSON (more answers 413)."""
    mcp_wait_s: float = Field(default=120.0, gt=0.0)
    """How long `remove_background` waits for its one-image job; past it the tool answers an
    error naming the job, which keeps running (follow it with `job_status`)."""

    # --- rembg's HTTP API (`POST /api/remove`, gateway/api/remove.py) and its sync lane ---
    remove_max_image_bytes: int = Field(default=50 * 1024**2, ge=1)
    """Largest image `/api/remove` takes (upload or fetched URL), in bytes; more answers 413
    (rembg's own server caps a fetched URL at 50 MiB)."""
    remove_url_fetch: bool = False
    """Allow `GET /api/remove?url=`: the gateway fetches the image itself (off: 403)."""
    remove_url_allow_private: bool = False
    """Let `?url=` reach loopback, private, link-local and CGNAT addresses (tests, a LAN)."""
    sync_queue_limit: int = Field(default=16, ge=0)
    """Sync-lane requests a balancer holds waiting for a worker slot; more get 503."""
    sync_queue_wait_s: float = Field(default=30.0, ge=0.0)
    """Longest a sync-lane request waits in the balancer for a slot; then 503 + Retry-After."""
    # --- the content-hash cache (gateway/pipeline/result_cache.py) -------------------------
    result_cache: bool = True
    """Reuse the cut-out of an image already processed (same bytes, models, options and
    tenant) instead of running the model again; the report marks such items `cached`."""

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object per log line (console and files), for ELK, Loki and the like."""
    resource_log_interval_s: float = Field(default=30.0, ge=0.0)
    """Seconds between the resource lines of each service's debug log (RSS, CPU, open files,
    queues, GPU memory); 0: none."""

    # --- CPU priority: request latency before throughput (issue 17, `/status` p99) ---------
    worker_nice: int = Field(default=10, ge=0, le=19)
    """Niceness a stage worker takes at start (`shared.priority`): on a busy box the
    gateway's answers win a CPU over inference; an idle core still goes to the worker.
    0: the same priority as the gateway."""
    ingest_child_min_bytes: int = Field(default=1024**2, ge=0)
    """Uploads of at least this many bytes are unpacked in a child process of the gateway
    (`gateway.intake.ingest_process`), away from its HTTP answers; smaller ones in the
    gateway itself (a child's start costs more than their ingest). 0: every upload."""
    ingest_child_min_members: int = Field(default=256, ge=0)
    """…and only when the upload is not a zip of fewer members than this (counted from its
    central directory; a tar or an upload on S3 counts as many): a child's start, ~1 s of
    CPU for its imports, is what ~200 photos cost to ingest in the gateway, and a small job
    waited for it before its first task (issue 14, point 2). 0: size alone decides."""
    ingest_nice: int = Field(default=10, ge=0, le=19)
    """Niceness of that child process: on a busy box the gateway's answers go first."""
    zip_processes: int = Field(default=0, ge=0, le=64)
    """Worker processes that make a big finished job's zip (`gateway.results.zip_processes`):
    its members' work takes no GIL of the gateway's, and the processes take the parts in
    turns. 0: one per CPU this gateway may use; 1: none, the zip is made in one thread of the
    gateway."""
    zip_process_min_members: int = Field(default=100_000, ge=0)
    """…for a zip of at least this many members. On a 2-core machine the processes (their
    start, their pipes, a CPU shared with the client) lost to the gateway's own thread on a
    40 000-member zip and won on a 200 000-member one (BENCHMARKS.md, "The download, sixth
    pass")."""
    zip_store: bool = True
    """Write a finished job's zip once, into its report folder, after its report
    (`gateway.results.stored_zip`): every download of it is then the file itself, sent by the
    kernel, with HTTP ranges (a cut download resumes). It costs a second copy of the job's
    outputs on disk; local storage only (on S3 every download is made as it is sent)."""
    zip_store_keep_free: float = Field(default=0.1, ge=0.0, le=1.0)
    """…and only when at least this share of the disk stays free once it is written: a stored
    zip never fills the disk that uploads and outputs need (a download of that job is then
    made as it is sent, as on S3)."""

    _key_table: KeyTable = PrivateAttr(default_factory=KeyTable)

    @field_validator("api_key", "api_keys", "api_keys_file", "admin_key", "callback_secret",
                     "internal_token", "cuda_visible_devices", "model_catalogue",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("model_catalogue")
    @classmethod
    def _catalogue_readable(cls, value: Path | None) -> Path | None:
        """A broken MODEL_CATALOGUE stops every service at start, naming the file and entry."""
        if value is not None:
            from shared.zoo import load_zoo  # shared.zoo reads no settings: no cycle

            load_zoo(value)
        return value

    @model_validator(mode="after")
    def _parse_keys(self) -> Settings:
        """The keys become hashes and labels once, here; a malformed entry fails the load."""
        self._key_table = build_table(
            self.api_key.get_secret_value() if self.api_key else None,
            self.api_keys.get_secret_value() if self.api_keys else None,
            self.api_keys_file,
            self.admin_key.get_secret_value() if self.admin_key else None,
        )
        return self

    @property
    def key_table(self) -> KeyTable:
        """The gateway's tenants as sha256 hashes and labels (empty: an open gateway)."""
        return self._key_table

    def without_raw_keys(self) -> Settings:
        """A copy holding the keys only as `key_table` hashes: what the gateway keeps."""
        return self.model_copy(update={"api_key": None, "api_keys": None, "admin_key": None})

    @property
    def database(self) -> str:
        """The task database's SQLAlchemy URL: DATABASE_URL, else SQLite in DATA_DIR."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'mattepipe.db').resolve()}"

    @property
    def sqlite_url(self) -> str:
        """The old name of `database` (it may name Postgres too); kept for callers."""
        return self.database

    @property
    def gateway_name(self) -> str:
        """GATEWAY_ID, else `<hostname>-<pid>`: unique among live gateways (a pid is unique
        on its host), and a restarted process gets a new one."""
        return self.gateway_id or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def worker_url_list(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.worker_urls.split(",") if u.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
