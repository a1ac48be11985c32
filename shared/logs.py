"""Logging for every service: a main log, a debug log, console, and request logging.

Per service, `DATA_DIR/logs/<service>.log` carries requests, answers and errors, and
`<service>_debug.log` the noisy state (queues, concurrency, batches, health) written through
the `mattepipe.debug` logger. Files roll over at midnight and at a size limit, whichever comes
first, and rolled files are gzip-compressed. Each process must log to its own file name (two
workers pass their worker ids), because rotation is not safe across processes.

One record is one line: paths, file names and archive members come from users, and a decoded
`%0A` in a URL would otherwise start a forged line. `safe()` escapes control characters where
user text is logged, and every handler `setup_logging` installs formats through
`EscapingFormatter`, which does the same to the whole message (tracebacks, which are ours,
keep their lines).

`LOG_FORMAT=json` makes every handler write one JSON object per line instead (for ELK, Loki
and the like): `time`, `level`, `logger`, `service`, `pid`, `message`, and where known
`request_id`, `job_id`, `task_id`, `stage` (`shared.log_context`), `exc_info` as one string,
and the structured `fields` a line was logged with (`extra={"fields": {...}}`).
Text lines show the request id and bound ids at their end, `[request_id=… task_id=…]`.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import time
from datetime import UTC, datetime
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.log_context import (
    CONTEXT_FIELDS,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    current_fields,
    new_request_id,
    valid_request_id,
)
from shared.metrics import IN_FLIGHT, REQUEST_SECONDS, REQUESTS
from shared.settings import Settings

__all__ = [
    "DEBUG_LOGGER",
    "EscapingFormatter",
    "JsonFormatter",
    "RequestLoggingMiddleware",
    "SizedTimedRotatingFileHandler",
    "add_request_logging",
    "debug_log",
    "safe",
    "setup_logging",
]

DEBUG_LOGGER = "mattepipe.debug"
debug_log = logging.getLogger(DEBUG_LOGGER)
_request_log = logging.getLogger("mattepipe.requests")

MAX_LOG_BYTES = 50 * 1024**2
BACKUP_COUNT = 30
_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
_OURS = "_mattepipe_handler"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""C0 and C1 controls and the two Unicode line separators: all that can break or disguise a
log line."""


def safe(text: object) -> str:
    """`text` for a log line: control characters as Python escapes (`\\n`, `\\x1b`,
    `\\u2028`), everything else as it is (names stay readable, unlike a full `repr`)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def _record_fields(record: logging.LogRecord) -> dict[str, object]:
    """The context ids of a line: those bound where it was logged, overridden by its `extra`."""
    out = current_fields()
    for key in CONTEXT_FIELDS:
        value = getattr(record, key, None)
        if value is not None:
            out[key] = value
    return out


class EscapingFormatter(logging.Formatter):
    """A formatter whose message part is always one line (see the module's docstring), with
    the line's request id and bound ids appended."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = safe(record.message)
        ids = _record_fields(record)
        if ids:
            record.message += " [" + " ".join(f"{k}={safe(v)}" for k, v in ids.items()) + "]"
        return super().formatMessage(record)


_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")
"""What `json.dumps(ensure_ascii=False)` leaves raw but `str.splitlines` splits on."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line (`LOG_FORMAT=json`); see the module's docstring for its keys.
    JSON escapes every control character, and the three line breaks it would keep raw are
    escaped here, so no message, name or traceback can span two lines."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "pid": record.process,
            "message": record.getMessage(),
        }
        out.update(_record_fields(record))
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out["fields"] = fields
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        text = json.dumps(out, ensure_ascii=False, default=str)
        return _LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _gzip_rotator(source: str, dest: str) -> None:
    with open(source, "rb") as src, gzip.open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(source)


class SizedTimedRotatingFileHandler(TimedRotatingFileHandler):
    """Rolls over at midnight and whenever the file would pass `max_bytes`; gzips old files.

    The stock timed handler names a rolled file by date only and would overwrite the first
    roll of the day with the second, so rolled names carry the time and a counter.
    """

    def __init__(self, filename: Path, max_bytes: int = MAX_LOG_BYTES,
                 backup_count: int = BACKUP_COUNT) -> None:
        filename.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(filename, when="midnight", backupCount=backup_count, encoding="utf-8")
        self.max_bytes = max_bytes
        self.rotator = _gzip_rotator
        self.namer = lambda name: name + ".gz"

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if super().shouldRollover(record):
            return True
        if self.max_bytes <= 0:
            return False
        if self.stream is None:
            self.stream = self._open()
        size = self.stream.tell()
        return size > 0 and size + len(self.format(record)) + 1 >= self.max_bytes

    def doRollover(self) -> None:
        if self.stream:
            self.stream.close()
            self.stream = None  # type: ignore[assignment]
        stamp = time.strftime("%Y-%m-%d_%H%M%S")
        dest = f"{self.baseFilename}.{stamp}"
        n = 1
        while os.path.exists(self.rotation_filename(dest)):
            dest = f"{self.baseFilename}.{stamp}.{n}"
            n += 1
        if os.path.exists(self.baseFilename):
            self.rotate(self.baseFilename, self.rotation_filename(dest))
        self._drop_old()
        self.stream = self._open()
        self.rolloverAt = self.computeRollover(int(time.time()))

    def _drop_old(self) -> None:
        if self.backupCount <= 0:
            return
        base = Path(self.baseFilename)
        rolled = sorted(base.parent.glob(base.name + ".*.gz"), key=lambda p: p.stat().st_mtime)
        for old in rolled[: max(0, len(rolled) - self.backupCount)]:
            old.unlink(missing_ok=True)


def _formatter(service: str, settings: Settings, text_format: str) -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter(service)
    return EscapingFormatter(text_format)


def _file_handler(path: Path, level: int, formatter: logging.Formatter) -> logging.Handler:
    h = SizedTimedRotatingFileHandler(path)
    h.setLevel(level)
    h.setFormatter(formatter)
    setattr(h, _OURS, True)
    return h


def setup_logging(service: str, settings: Settings) -> None:
    """Idempotent: calling it again (tests, reloads) replaces the handlers it added before."""
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        level = logging.INFO
    log_dir = Path(settings.data_dir) / "logs"
    root = logging.getLogger()
    dbg = logging.getLogger(DEBUG_LOGGER)
    for lg in (root, dbg):
        for h in [h for h in lg.handlers if getattr(h, _OURS, False)]:
            lg.removeHandler(h)
            h.close()
    root.setLevel(level)
    root.addHandler(_file_handler(log_dir / f"{service}.log", level,
                                  _formatter(service, settings, _FORMAT)))
    console = logging.StreamHandler()
    console.setLevel(level)
    console.setFormatter(_formatter(service, settings,
                                    f"%(asctime)s {service} %(levelname)s %(message)s"))
    setattr(console, _OURS, True)
    root.addHandler(console)
    # The debug stream goes to its own file only, so it cannot drown the main log.
    dbg.setLevel(logging.DEBUG)
    dbg.propagate = False
    dbg.addHandler(_file_handler(log_dir / f"{service}_debug.log", logging.DEBUG,
                                 _formatter(service, settings, _FORMAT)))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs requests
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _incoming_request_id(scope: Scope) -> str | None:
    want = REQUEST_ID_HEADER.lower().encode("latin-1")
    for name, value in scope.get("headers") or ():
        if name.lower() == want:
            return valid_request_id(value.decode("latin-1"))
    return None


class RequestLoggingMiddleware:
    """Pure ASGI (no body buffering, so 100 GB uploads and zip streams pass untouched).

    It takes the caller's `X-Request-ID` when valid (1–128 visible ASCII characters; any other
    is replaced by a fresh one), makes one otherwise, binds it for every line logged while the
    request runs (`shared.log_context.REQUEST_ID`) and returns it in the answer's header."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        rid = _incoming_request_id(scope) or new_request_id()
        header = (REQUEST_ID_HEADER.lower().encode("latin-1"), rid.encode("latin-1"))
        rid_token = REQUEST_ID.set(rid)
        IN_FLIGHT.labels(self.service).inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers") or ()
                           if k.lower() != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            _request_log.exception("%s %s failed", scope["method"], safe(scope["path"]))
            raise
        finally:
            IN_FLIGHT.labels(self.service).dec()
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            REQUESTS.labels(self.service, route, scope["method"], str(status)).inc()
            REQUEST_SECONDS.labels(self.service, route).observe(elapsed)
            if route not in ("/health", "/metrics") or status >= 400:
                level = logging.WARNING if status >= 500 else logging.INFO
                client = scope.get("client") or ("-", 0)
                _request_log.log(level, "%s %s %s %d %.1fms", client[0], scope["method"],
                                 safe(scope["path"]), status, elapsed * 1000)
            REQUEST_ID.reset(rid_token)


def add_request_logging(app: ASGIApp, service: str) -> None:
    """Log method, path, status and duration of every request, and count them for /metrics."""
    add = getattr(app, "add_middleware", None)
    if add is None:
        raise TypeError("add_request_logging needs a Starlette/FastAPI app")
    add(RequestLoggingMiddleware, service=service)
