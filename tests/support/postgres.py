"""A throwaway Postgres cluster on 127.0.0.1 for the tests (issue 13, "Past one machine").

Debian's `postgresql` package provides the binaries (`initdb`, `pg_ctl`, `createdb`); the
cluster lives in a temporary directory, listens on a free loopback port with its socket in
that directory, trusts local connections and runs without fsync (a test cluster loses
nothing worth keeping). `initdb` refuses to run as root, so as root the cluster belongs to
the unprivileged `nobody` user (`runuser -u nobody`) and its directory is chowned to it.

Without the binaries (or, as root, without `runuser`) the tests that need Postgres SKIP with
the reason; `make test` and `make scale-test` install the package first (`make scale-deps`).

API: the session fixture `postgres_server` (a `PostgresServer`, its admin DSN in `.dsn`) and
`fresh_database_url(server)`, a new empty database's `postgresql+asyncpg://` URL.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import free_port

__all__ = [
    "PostgresServer", "PostgresUnavailable", "fresh_database_url", "postgres_bin_dir",
    "postgres_server", "running_postgres",
]

RUN_AS = "nobody"
"""The unprivileged user the cluster runs as when the tests run as root."""
START_TIMEOUT_S = 60
"""How long `pg_ctl start -w` may take (a slow, shared machine)."""
_names = itertools.count(1)


def postgres_bin_dir() -> Path | None:
    """Where `initdb` and `pg_ctl` are: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(d, "initdb").exists():
            return Path(d)
    return None


@dataclass
class PostgresServer:
    """A running cluster: `dsn` is the admin's (user `postgres`, database `postgres`)."""

    host: str
    port: int
    user: str
    bin_dir: Path
    root: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/postgres"

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL of one of its databases (asyncpg driver)."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{dbname}"

    def createdb(self, name: str) -> None:
        subprocess.run([str(self.bin_dir / "createdb"), "-h", self.host, "-p", str(self.port),
                        "-U", self.user, name], check=True, capture_output=True, timeout=60)


def fresh_database_url(server: PostgresServer) -> str:
    """A new, empty database on `server`, named uniquely; its `postgresql+asyncpg://` URL."""
    name = f"t{os.getpid()}_{next(_names)}"
    server.createdb(name)
    return server.url(name)


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", RUN_AS, "--", *cmd]


def _why_not() -> str | None:
    if postgres_bin_dir() is None:
        return ("no Postgres binaries (initdb): install Debian's `postgresql` package "
                "(`make scale-deps` does as root)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without `runuser`: initdb refuses root"
    return None


class PostgresUnavailable(RuntimeError):
    """Why no cluster could be had (the tests skip with it; the bench prints it)."""


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A throwaway cluster for the duration of the block (also used by `bench.db_postgres`);
    raises `PostgresUnavailable` with the reason when none can be had."""
    why = _why_not()
    if why is not None:
        raise PostgresUnavailable(why)
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="mattepipe-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, RUN_AS)
    port = free_port()
    init = subprocess.run(
        _as_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                   "-E", "UTF8", "--no-sync"]),
        capture_output=True, text=True, timeout=120)
    if init.returncode:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
    opts = f"-k {root} -h 127.0.0.1 -p {port} -F -c max_connections=200"
    start = subprocess.run(
        _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
                   str(root / "log"), "-w", "-t", str(START_TIMEOUT_S), "start"]),
        capture_output=True, text=True, timeout=START_TIMEOUT_S + 30)
    if start.returncode:
        log = (root / "log").read_text(errors="replace")[-1000:] if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"Postgres did not start: {start.stderr.strip()} {log}")
    try:
        yield PostgresServer("127.0.0.1", port, "postgres", bin_dir, root)
    finally:
        subprocess.run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                  "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One cluster for the whole test session; each test makes its own databases."""
    try:
        cluster = running_postgres()
        server = cluster.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        cluster.__exit__(None, None, None)
