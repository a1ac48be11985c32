"""The one exception tree of the services: every error we raise on purpose is a MattepipeError.

    MattepipeError                       anything mattepipe raises on purpose
    ├── InputRejected                    the input itself is wrong; the same input fails the
    │   │                                same way, so a worker answers 400, not retryable
    │   ├── shared.imaging.ImageRejected            not an image we take
    │   └── shared.storage.PathOutsideDataDir       a path that leaves DATA_DIR
    ├── StageFailure(status, retryable)  a worker stage knows the HTTP status and verdict
    │   └── BadInput                     400, not retryable (shared.worker.stage)
    ├── EngineError(retryable)           a matting engine cannot handle this input:
    │                                    503 when another try may work, else 400
    │   │                                (matting_worker.engines.base re-exports it)
    │   └── shared.model_fetch.ModelDownloadError          a zoo download failed
    ├── ConfigError                      a model name or model file the operator got wrong
    │   ├── matting_worker.engines.registry.UnknownModel   (also a KeyError)
    │   │   └── ModelNotDownloaded       a zoo model not in MODELS_DIR, downloads off
    │   ├── matting_worker.engines.presets.PresetError     (also a ValueError)
    │   └── shared.zoo.ZooError          a bad model catalogue (also a ValueError)
    ├── IntakeError                      an upload the gateway cannot turn into tasks
    │   ├── gateway.intake.archive.ArchiveRejected → ArchiveCorrupt
    │   └── gateway.intake.archive_names.BadName           (also a ValueError)
    ├── ObjectMissing                    no object under that key (shared.objects); also a
    │                                    FileNotFoundError, so `except OSError` still holds
    ├── Busy                             a shared resource is taken; try again shortly
    │   ├── shared.balancer.pool.NoWorker                  (503 with Retry-After)
    │   └── gateway.intake.tus_store.UploadBusy
    └── gateway.errors.GatewayError      a public API refusal with its HTTP status and
        │                                headers; gateway/app.py maps it to the answer
        ├── BadRequest 400 ─ ClientGone, NotFound 404, Conflict 409, Gone 410,
        ├── PreconditionFailed 412, PayloadTooLarge 413, UnsupportedMediaType 415,
        └── ChecksumMismatch 460, QuotaExceeded 429 (retry_after), InsufficientStorage 507

Classes that were plain `ValueError`/`KeyError`/`RuntimeError` keep that base too, so every
`except ValueError` written before the tree still catches them. `classify_error`
(shared.worker.stage) reads a worker's answer off this tree with `isinstance`, never by
duck typing.
"""

from __future__ import annotations

__all__ = [
    "Busy",
    "ConfigError",
    "EngineError",
    "InputRejected",
    "IntakeError",
    "MattepipeError",
    "ObjectMissing",
    "StageFailure",
]

STAGE_FAILURE_STATUS = 500
"""A stage failure's HTTP status when the stage names none: the worker's own fault."""


class MattepipeError(Exception):
    """The root: `except MattepipeError` catches every error we raise on purpose."""


class InputRejected(MattepipeError):
    """The input itself is wrong (not an image, a path outside DATA_DIR): retrying the same
    input cannot help. A worker answers 400, not retryable; the message is the reason."""


class StageFailure(MattepipeError):
    """A failure whose HTTP status and retryability the stage knows best."""

    def __init__(
        self, detail: str, status: int = STAGE_FAILURE_STATUS, retryable: bool = True
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.retryable = retryable


class EngineError(MattepipeError, RuntimeError):
    """The engine cannot handle this input; `retryable` says whether another try may work
    (a worker answers 503 then, else 400). Still a RuntimeError for older `except` clauses."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ConfigError(MattepipeError):
    """A model name or model file the operator got wrong; the message names what and where."""


class IntakeError(MattepipeError):
    """An upload, or a part of one, that the gateway cannot turn into tasks."""


class ObjectMissing(MattepipeError, FileNotFoundError):
    """No object under the key asked for (shared.objects): a local file or an S3 object.
    A FileNotFoundError too, so code written for files (`except FileNotFoundError`) keeps
    working against S3 without a second except clause."""


class Busy(MattepipeError):
    """A shared resource (a worker slot, an upload's lock) is taken: try again shortly."""
