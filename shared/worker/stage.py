"""What a worker stage is, and how its failures become HTTP answers (docs/DESIGN.md, "Internal
API").

A worker stage (matting, comparison) supplies prepare → run_batch → finish; `shared.worker.server`
serves it. `classify_error` is the one table from exception to (status, retryable).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from shared.errors import EngineError, InputRejected, ObjectMissing, StageFailure
from shared.schemas import StageRequest
from shared.settings import Settings
from shared.storage import Storage

__all__ = [
    "BadInput",
    "BatchPolicy",
    "HoldsModels",
    "StageFailure",
    "StageOutput",
    "WorkerStage",
    "classify_error",
    "configure_threads",
    "thread_count",
]

Params = TypeVar("Params")
Item = TypeVar("Item")
Out = TypeVar("Out")


class BadInput(StageFailure):
    """The request itself is wrong (missing file, bad parameter): retrying cannot help."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, status=400, retryable=False)


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int
    concurrency: int = 1
    """Batches of this key that may run at once (1 for an engine that owns a GPU)."""
    max_batch_delay_ms: float = 0.0


@dataclass
class StageOutput:
    output: str
    """DATA_DIR-relative path of the main output, as written."""
    extra: dict[str, Any] = field(default_factory=dict)


class WorkerStage(Protocol[Params, Item, Out]):
    """What a worker runs. All methods but `batch_key` run in threads and may block.

    `Params` is the stage's parameter model (checked by the server before any method sees the
    request), `Item` what `prepare` decodes, `Out` what the batched part returns per item."""

    @property
    def name(self) -> str:
        """The stage's name: metric labels, /health's `service`, log lines."""

    @property
    def route(self) -> str:
        """The endpoint the server answers on."""

    @property
    def request_model(self) -> type[StageRequest[Params]]:
        """The request type: a body whose `params` do not fit it is a 400."""

    def load(self) -> None:
        """Heavy start-up (the default engine). /health says `loading` until it returns."""

    def capacity(self) -> int:
        """Concurrent requests this worker wants from its balancer."""

    def info(self) -> dict[str, Any]: ...

    def batch_key(self, req: StageRequest[Params]) -> str:
        """Which batcher the request joins (e.g. the engine name); cheap, no I/O."""

    def ensure(self, key: str) -> BatchPolicy:
        """Make `key` usable (load a model lazily) and say how to batch it."""

    def prepare(self, req: StageRequest[Params], storage: Storage) -> Item:
        """Validate and decode the inputs."""

    def run_batch(self, key: str, items: list[Item]) -> list[Out]:
        """The batched part: one output per item, same order."""

    def finish(
        self, req: StageRequest[Params], item: Item, out: Out, storage: Storage
    ) -> StageOutput:
        """Encode and write the outputs atomically."""


@runtime_checkable
class HoldsModels(Protocol):
    """A stage whose engines come from model files (matting): the worker's `GET /models` and
    `POST /models/reload` reach it; a stage without (comparison) answers with nothing loaded."""

    def models(self) -> dict[str, Any]:
        """What is loaded now (`matting_worker.engines.pool.EnginePool.status`)."""

    def reload_models(self, names: list[str] | None) -> dict[str, Any]:
        """Load `names` (None: every loaded engine) again from their files."""


def classify_error(exc: BaseException, storage: Storage | None = None) -> tuple[int, bool, str]:
    """(HTTP status, retryable, detail) for an exception raised while serving a request; with
    `storage`, paths in the detail are DATA_DIR-relative (`Storage.scrub`)."""
    status, retryable, detail = _classify(exc, storage)
    return status, retryable, storage.scrub(detail) if storage is not None else detail


def _classify(exc: BaseException, storage: Storage | None) -> tuple[int, bool, str]:
    if isinstance(exc, StageFailure):
        return exc.status, exc.retryable, str(exc)
    if isinstance(exc, InputRejected):  # ImageRejected, PathOutsideDataDir
        return 400, False, str(exc)
    if isinstance(exc, ObjectMissing):  # its message names the key, never a local path
        return 400, False, str(exc)
    if isinstance(exc, FileNotFoundError):
        # DATA_DIR-relative (or the bare name without a storage): the absolute path would
        # tell users where DATA_DIR lives
        name = str(exc.filename or "")
        shown = storage.scrub(name) if storage is not None else os.path.basename(name)
        return 400, False, f"file not found: {shown or '?'}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return 507, True, f"disk full: {exc.strerror or 'no space left'} on the shared volume"
    if isinstance(exc, EngineError):  # the engine carries its own verdict
        return (503, True, str(exc)) if exc.retryable else (400, False, str(exc))
    # An unexpected exception's text (paths, addresses, library internals) stays in the
    # worker's log (the server logs it with its traceback); users see its kind only.
    return 500, True, f"internal error in the worker ({type(exc).__name__}); see its log"


def thread_count(settings: Settings) -> int:
    """Threads per worker: WORKER_THREADS, or the cores shared among the local workers."""
    if settings.worker_threads > 0:
        return settings.worker_threads
    workers = max(1, settings.matting_workers + settings.comparison_workers)
    return max(1, (os.cpu_count() or 1) // workers)


def configure_threads(settings: Settings) -> int:
    """Apply `thread_count` to OpenMP/BLAS, OpenCV and torch; returns it.

    Call before numpy/torch/cv2 are imported for the environment variables to count.
    """
    n = thread_count(settings)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
