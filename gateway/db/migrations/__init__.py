"""The task database's schema migrations (Alembic), for SQLite and Postgres alike.

`upgrade(conn)` brings any database to the newest revision inside the caller's transaction:
the gateway runs it at start (`Database.open`), a Kubernetes Job runs it once per release
(`python -m gateway migrate`). A database made by `create_all` before there were migrations
(tables but no `alembic_version`) is first brought to revision 0001 (`tables.adopt_legacy`)
and stamped, then upgraded like any other. On Postgres the whole upgrade holds an advisory
transaction lock, so gateways starting together migrate one after the other, never at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, inspect, text

from gateway.db.locks import Chore
from gateway.db.tables import adopt_legacy, is_postgres

__all__ = ["FIRST_REVISION", "HEAD", "MIGRATIONS_DIR", "alembic_config", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent
FIRST_REVISION = "0001"
"""The schema `create_all` made before there were migrations."""
HEAD = "head"

logging.getLogger("alembic").setLevel(logging.WARNING)  # not its plugin list at every start
logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)  # but each revision run


def alembic_config(conn: Connection | None = None) -> Config:
    """Alembic's configuration without an ini file: the script folder is this package; with
    `conn`, `env.py` migrates on that connection (inside its transaction)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def upgrade(conn: Connection) -> None:
    """Migrate the connection's database to the newest revision (adopting a pre-Alembic one)."""
    if is_postgres(conn.dialect.name):
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": Chore.MIGRATE.key})
    have = inspect(conn)
    cfg = alembic_config(conn)
    if have.has_table("jobs") and not have.has_table("alembic_version"):
        adopt_legacy(conn)
        command.stamp(cfg, FIRST_REVISION)
    command.upgrade(cfg, HEAD)
