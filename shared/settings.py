"""One settings class for all five services, read once per process.

The variable names are those of docs/DESIGN.md ("Configuration") and of the original compose
file, so the same `.env` drives the local stack and the containers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

GIB = 1024**3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- storage and database -----------------------------------------------------------
    data_dir: Path = Path("./data")
    database_url: str = ""
    """Empty means SQLite at DATA_DIR/mattepipe.db."""
    models_dir: Path = Path("./models")

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
    max_archive_members: int = 1_000_000
    max_uncompressed_size: int = 200 * GIB
    max_compression_ratio: float = 200.0
    max_image_pixels: int = 100_000_000
    """Pixel-bomb guard: an image claiming more pixels than this is rejected unread."""
    min_free_disk: int = 256 * 1024**2
    """Uploads answer 507 when DATA_DIR has less free space than this."""

    # --- engines and batching --------------------------------------------------------------
    default_model: str = "classical"
    max_batch_size: int = 8
    max_batch_delay_ms: int = 10
    cuda_visible_devices: str | None = None
    gpu_memory_fraction: float = Field(default=0.3, gt=0.0, le=1.0)
    worker_threads: int = 0
    """CPU threads per worker for decode/encode and engines; 0 means cores / workers."""

    balancer_queue_limit: int = 1000
    """Requests a balancer holds waiting for a free worker; more get 503 + Retry-After."""

    # --- scheduler -------------------------------------------------------------------------
    matting_concurrency: int = 16
    comparison_concurrency: int = 8

    # --- access ------------------------------------------------------------------------------
    api_key: str | None = None
    max_concurrent_jobs: int = Field(default=4, ge=0)
    """Per API key (or for all callers when API_KEY is unset); 0 means no limit."""
    max_jobs_per_hour: int = Field(default=100, ge=0)
    max_jobs_per_day: int = Field(default=1000, ge=0)
    callback_secret: str | None = None
    internal_token: str | None = None
    """Bearer credential of the internal plane (gateway → balancers → workers, heartbeats).
    Balancers and workers refuse to start without it; the local stack generates one."""

    log_level: str = "INFO"

    @field_validator(
        "api_key", "callback_secret", "internal_token", "cuda_visible_devices", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def sqlite_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'mattepipe.db').resolve()}"

    @property
    def worker_url_list(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.worker_urls.split(",") if u.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
