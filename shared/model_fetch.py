"""Download a zoo model into MODELS_DIR: resumable, checked, atomic, once across processes.

Several worker processes may want the same missing model at the same moment; a file lock
(`MODELS_DIR/.<file>.lock`, `fcntl.flock`, released by the OS if its holder dies) lets one
download while the others wait and then find the file. The bytes go to `.<file>.part` and are
resumed from its size with an HTTP Range request after a cut connection (here, or by the next
`pull` after a crash); the finished part is checked against the published hash, fsynced and
renamed over the target, so MODELS_DIR never holds half a model or an unchecked one. A hash
mismatch deletes the part: resuming a wrong file could never make it right.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.errors import EngineError
from shared.settings import Settings
from shared.timing import MODEL_DOWNLOAD_RETRY_S, MODEL_DOWNLOAD_TIMEOUT_S
from shared.zoo import Zoo, ZooModel, load_zoo, new_hasher

__all__ = [
    "DOWNLOAD_ATTEMPTS",
    "MAX_MODEL_BYTES",
    "ModelDownloadError",
    "Progress",
    "ZooSource",
    "fetch_model",
    "file_digest",
    "model_lock",
    "verify_file",
]

log = logging.getLogger("mattepipe.models")

MAX_MODEL_BYTES = 8 * 1024**3
"""Largest model file a download accepts (rembg's largest, bria-rmbg, is about 1 GB): a
mirror that streams without end fills no disk. The hash is only known at the end."""
DOWNLOAD_ATTEMPTS = 6
"""Connections one download makes (the first and its resumptions) before it gives up; the
part stays, so the next try resumes it."""
CHUNK_BYTES = 1024 * 1024
"""Read and hash unit."""

Progress = Callable[[int, int | None], None]
"""Called with (bytes so far, total bytes or None when the server does not say)."""


class ModelDownloadError(EngineError):
    """A model could not be fetched. `retryable`: a network failure (another try may work);
    not retryable: a hash mismatch, a missing file at the source or an oversized one."""


@dataclass(frozen=True)
class ZooSource:
    """Where a missing zoo model may come from, and whether a worker may fetch it itself."""

    zoo: Zoo
    base_url: str = ""
    download: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ZooSource:
        return cls(load_zoo(settings.model_catalogue), settings.model_base_url,
                   settings.model_download)


def file_digest(path: Path, algorithm: str) -> str:
    hasher = new_hasher(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            hasher.update(chunk)
    digest: str = hasher.hexdigest()
    return digest


def verify_file(model: ZooModel, path: Path) -> str | None:
    """None when `path` has the model's published hash; else what is wrong, in words."""
    if not path.is_file():
        return f"{path.name} is missing"
    actual = file_digest(path, model.algorithm)
    if actual != model.digest:
        return (f"{path.name} does not match its published {model.algorithm} "
                f"({model.digest}); its {model.algorithm} is {actual}")
    return None


@contextlib.contextmanager
def model_lock(models_dir: Path, file_name: str) -> Iterator[None]:
    """Exclusive across processes for one model file; the OS drops it with its holder."""
    lock = models_dir / f".{file_name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock; the empty lock file stays (no unlink race)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _one_pass(client: httpx.Client, url: str, part: Path, max_bytes: int,
              progress: Progress | None) -> bool:
    """One connection: append to `part` from its size. True when the server says it is all
    there; raises httpx.TransportError when the connection is cut."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with client.stream("GET", url, headers=headers) as r:
        if r.status_code == 416 and offset:  # nothing after `offset`: the part is whole
            return True
        if r.status_code == 206 and r.headers.get("content-range", "").startswith(
                f"bytes {offset}-"):
            mode = "ab"
        elif r.status_code == 200:
            mode, offset = "wb", 0  # no Range support: start again
        else:
            retryable = r.status_code >= 500 or r.status_code in (408, 429)
            raise ModelDownloadError(f"{url} answered HTTP {r.status_code}",
                                     retryable=retryable)
        length = r.headers.get("content-length")
        total = offset + int(length) if length and length.isdigit() else None
        if total is not None and total > max_bytes:
            raise ModelDownloadError(f"{url} is {total} bytes, more than the {max_bytes} a "
                                     "model may be", retryable=False)
        done = offset
        with part.open(mode) as f:
            for chunk in r.iter_bytes():  # as they come: a cut keeps all it got
                done += len(chunk)
                if done > max_bytes:
                    raise ModelDownloadError(f"{url} sent more than the {max_bytes} bytes a "
                                             "model may be", retryable=False)
                f.write(chunk)
                if progress is not None:
                    progress(done, total)
            f.flush()
            os.fsync(f.fileno())
    return True


def fetch_model(model: ZooModel, models_dir: Path, base_url: str = "", *, force: bool = False,
                progress: Progress | None = None, max_bytes: int = MAX_MODEL_BYTES,
                attempts: int = DOWNLOAD_ATTEMPTS) -> Path:
    """`MODELS_DIR/<name>.onnx`, downloaded and checked unless it is there already (`force`:
    download again and replace it). Raises ModelDownloadError."""
    target = models_dir / model.local_name
    if target.is_file() and not force:
        return target
    try:
        return _fetch(model, models_dir, base_url, force, progress, max_bytes, attempts)
    except OSError as exc:  # MODELS_DIR not writable, disk full: the operator's to fix
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise ModelDownloadError(
            f"model {model.name}: cannot write it into MODELS_DIR: {exc.strerror or exc}",
            retryable=full) from exc


def _fetch(model: ZooModel, models_dir: Path, base_url: str, force: bool,
           progress: Progress | None, max_bytes: int, attempts: int) -> Path:
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / model.local_name
    url = model.url_from(base_url)
    part = models_dir / f".{model.local_name}.part"
    with model_lock(models_dir, model.local_name):
        if target.is_file() and not force:  # another process fetched it while we waited
            return target
        log.info("downloading model %s from %s", model.name, url)
        timeout = httpx.Timeout(MODEL_DOWNLOAD_TIMEOUT_S)
        last = ""
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            for attempt in range(attempts):
                if attempt:
                    time.sleep(MODEL_DOWNLOAD_RETRY_S * 2 ** min(attempt - 1, 3))
                try:
                    _one_pass(client, url, part, max_bytes, progress)
                    break
                except ModelDownloadError as exc:
                    if not exc.retryable:
                        part.unlink(missing_ok=True)
                        raise ModelDownloadError(f"model {model.name}: {exc}",
                                                 retryable=False) from exc
                    last = str(exc)
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                log.info("model %s: download cut (%s); resuming", model.name, last)
            else:
                raise ModelDownloadError(
                    f"model {model.name}: download from {url} failed {attempts} times "
                    f"(last: {last}); the part kept so far resumes on the next try",
                    retryable=True)
        wrong = verify_file(model, part)
        if wrong is not None:
            part.unlink(missing_ok=True)
            raise ModelDownloadError(
                f"model {model.name}: the download from {url} is corrupt or not the published "
                f"file: {wrong.replace(part.name, model.file)}. It was deleted.",
                retryable=False)
        os.replace(part, target)
        _fsync_dir(models_dir)
    log.info("model %s saved as %s", model.name, target)
    return target
