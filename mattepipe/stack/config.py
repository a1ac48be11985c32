"""The local stack's Supervisor config, built from `Settings`: one program per service.

Secrets never go into the file: supervisord gets them in its own environment
(`stack_environment`) and its children inherit them. The internal plane's token
(INTERNAL_TOKEN) is one of them: when none is set, `with_internal_token` keeps one in
DATA_DIR/internal_token (mode 0600) so restarts and clients of the same DATA_DIR agree.
Balancers and workers bind to INTERNAL_HOST (loopback by default), the gateway to HOST.
Values are escaped for Supervisor's parser, which expands `%(x)s` (some options twice) and
splits `environment=` with a non-POSIX shlex; what it cannot carry is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from shared.settings import Settings
from shared.stages import Stage

__all__ = [
    "INTERNAL_TOKEN_FILE",
    "SECRET_FIELDS",
    "STOP_WAIT_S",
    "Program",
    "StackError",
    "health_urls",
    "internal_url",
    "local_url",
    "program_url",
    "render_config",
    "repo_root",
    "stack_environment",
    "stack_programs",
    "supervisor_bin",
    "with_internal_token",
    "write_config",
]

SECRET_FIELDS = frozenset(
    {"api_key", "api_keys", "admin_key", "callback_secret", "database_url", "internal_token"}
)
"""Kept out of the config file (a database URL may hold a password)."""
INTERNAL_TOKEN_FILE = "internal_token"
"""DATA_DIR/<this>: the local stack's generated INTERNAL_TOKEN (mode 0600)."""
_TOKEN_BYTES = 32
STOP_WAIT_S = 15
"""How long supervisord lets a service drain after SIGTERM before SIGKILL."""
_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS


class StackError(RuntimeError):
    """The stack cannot start (port taken, supervisord missing, config not representable)."""


@dataclass(frozen=True)
class Program:
    """One supervised process; `port` None means it has no health check."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    priority: int = 500
    health_path: str = "/health"
    internal: bool = False
    """A balancer or worker: binds to INTERNAL_HOST, not HOST."""
    autorestart: bool = True
    """Supervisor brings it back when it dies (off for a process a test kills for good)."""


def repo_root() -> Path:
    """The checkout the services run from (PYTHONPATH): the folder holding `shared/`."""
    return Path(__file__).resolve().parents[2]


def supervisor_bin(name: str = "supervisord") -> str:
    """Supervisor's scripts sit beside the interpreter of the venv that installed them."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    raise StackError(f"{name} not found beside {sys.executable}; install the 'supervisor' package")


def local_url(settings: Settings, port: int) -> str:
    """The URL a local client uses: a wildcard bind address is reached via loopback."""
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{port}"


def internal_url(settings: Settings, port: int) -> str:
    """A balancer's or worker's local URL: INTERNAL_HOST, a wildcard reached via loopback."""
    host = settings.internal_host
    host = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{port}"


def program_url(settings: Settings, p: Program) -> str:
    assert p.port is not None
    return (internal_url if p.internal else local_url)(settings, p.port)


def with_internal_token(settings: Settings) -> Settings:
    """`settings` with an INTERNAL_TOKEN: the one set, else DATA_DIR/internal_token, else a
    new random one written there (0600, created exclusively so two starts cannot disagree)."""
    if settings.internal_token:
        return settings
    path = settings.data_dir.resolve() / INTERNAL_TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise StackError(f"{path} is empty; delete it or set INTERNAL_TOKEN") from None
    else:
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
    return settings.model_copy(update={"internal_token": token})


def _worker_ports(first: int, count: int) -> list[int]:
    return [first + i for i in range(count)]


def stack_programs(settings: Settings) -> list[Program]:
    """Gateway, both balancers and their workers; workers start first so balancers find them."""
    py = sys.executable
    host = settings.internal_host
    urls = {
        stage: [internal_url(settings, p) for p in
                _worker_ports(stage.worker_port(settings), stage.local_workers(settings))]
        for stage in Stage
    }
    programs: list[Program] = []
    for stage in Stage:
        first = stage.worker_port(settings)
        for i, url in enumerate(urls[stage], start=1):
            wid, port = f"{stage.value}-worker-{i}", first + i - 1
            programs.append(Program(
                wid, (py, "-m", stage.worker_package, "--port", str(port), "--worker-id", wid,
                      "--host", host),
                {"WORKER_ID": wid, "PUBLIC_URL": url}, port, priority=100, internal=True))
    programs += [
        Program(f"{stage.value}-api", (py, "-m", stage.api_service, "--host", host),
                {"WORKER_URLS": ",".join(urls[stage])}, stage.api_port(settings), 200,
                internal=True)
        for stage in Stage
    ]
    programs.append(Program("gateway", (py, "-m", "gateway"), {}, settings.gateway_port, 300))
    return programs


def health_urls(settings: Settings, programs: Iterable[Program] | None = None) -> list[str]:
    progs = stack_programs(settings) if programs is None else programs
    return [program_url(settings, p) + p.health_path for p in progs if p.port is not None]


def _shared_env(settings: Settings) -> dict[str, str]:
    """Every non-secret setting, resolved, plus what ties the local processes together."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if name in SECRET_FIELDS or value is None:
            continue
        env[name.upper()] = str(value)
    env.update({
        "DATA_DIR": str(settings.data_dir.resolve()),
        "MODELS_DIR": str(settings.models_dir.resolve()),
        "MATTING_API_URL": internal_url(settings, settings.matting_api_port),
        "COMPARISON_API_URL": internal_url(settings, settings.comparison_api_port),
        "WORKER_URLS": "",
        "WORKER_ID": "",
        "PUBLIC_URL": "",
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(
            [str(repo_root()), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def stack_environment(settings: Settings) -> dict[str, str]:
    """supervisord's own environment, which its children inherit: the caller's, plus the
    secrets kept out of the file ("" for unset, so a stray .env cannot differ from us).
    Pass settings through `with_internal_token` first: the services refuse to start without
    INTERNAL_TOKEN."""
    env = dict(os.environ)
    for name in SECRET_FIELDS:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = "" if value is None else str(value)
    return env


def _ini(value: str, what: str, expansions: int = 1) -> str:
    """A value for the ini file, `%` escaped for each of Supervisor's `%(x)s` expansions of it;
    what configparser would cut (inline comments) or split (newlines) is refused."""
    if any(c in value for c in "\r\n\0") or " ;" in value or " #" in value or "\t;" in value \
            or "\t#" in value:
        raise StackError(f"{what} cannot be written to a Supervisor config: {value!r}")
    return value.replace("%", "%" * 2**expansions)


def _env_value(key: str, value: str) -> str:
    """Quote for Supervisor's `environment=` (non-POSIX shlex: quotes, no escapes)."""
    if value and (value[0] in "'\"" or value[-1] in "'\""):
        raise StackError(f"{key} starts or ends with a quote; Supervisor would strip it")
    quote = '"' if '"' not in value else "'"
    if quote in value:
        raise StackError(f"{key} holds both quote characters; Supervisor cannot carry it")
    return _ini(f"{key}={quote}{value}{quote}", key)


def _socket_path(data_dir: Path) -> Path:
    path = data_dir / "supervisor.sock"
    if len(str(path)) <= _SOCKET_MAX:
        return path
    digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"mattepipe-{digest}.sock"


def render_config(settings: Settings, programs: Sequence[Program] | None = None,
                  directory: Path | None = None) -> str:
    """The whole supervisord.conf as text."""
    data = settings.data_dir.resolve()
    logs = data / "logs"
    progs = stack_programs(settings) if programs is None else programs
    workdir = _ini(str(directory or repo_root()), "directory")
    sock = _ini(str(_socket_path(data)), "socket")
    shared = _shared_env(settings)
    lines = [
        "; generated by shared/stack.py from Settings; edits are overwritten",
        "[supervisord]",
        f"logfile={_ini(str(logs / 'supervisord.log'), 'logfile')}",
        f"pidfile={_ini(str(logs / 'supervisord.pid'), 'pidfile')}",
        f"childlogdir={_ini(str(logs), 'childlogdir')}",
        "logfile_maxbytes=10MB", "logfile_backups=3", "nodaemon=true", "minfds=4096",
        *(["user=root"] if os.geteuid() == 0 else []),  # says so, instead of a CRIT warning
        "", "[unix_http_server]", f"file={sock}", "chmod=0700",
        "", "[supervisorctl]", f"serverurl=unix://{sock}",
        "", "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
    ]
    for p in progs:
        env = {**shared, **p.env}
        log = _ini(str(logs / f"{p.name}.out"), "log file", expansions=2)
        lines += [
            "", f"[program:{p.name}]",
            "command=" + _ini(shlex.join(p.argv), f"{p.name} command"),
            f"directory={workdir}",
            "environment=" + ",".join(_env_value(k, v) for k, v in sorted(env.items())),
            f"priority={p.priority}", "autostart=true",
            f"autorestart={'true' if p.autorestart else 'false'}", "startsecs=1",
            "startretries=1000", "stopsignal=TERM", f"stopwaitsecs={STOP_WAIT_S}",
            "stopasgroup=true", "killasgroup=true", "redirect_stderr=true",
            f"stdout_logfile={log}", "stdout_logfile_maxbytes=20MB", "stdout_logfile_backups=3",
        ]
    return "\n".join(lines) + "\n"


def write_config(settings: Settings, path: Path, programs: Sequence[Program] | None = None,
                 directory: Path | None = None) -> Path:
    """Write the config (and create DATA_DIR/logs, where supervisord writes)."""
    (settings.data_dir.resolve() / "logs").mkdir(parents=True, exist_ok=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_config(settings, programs, directory), encoding="utf-8")
    return path


