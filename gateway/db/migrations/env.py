"""Alembic's environment: migrate on the connection `gateway.db.migrations.upgrade` passes
(inside its transaction). The way to run the migrations is `python -m gateway migrate` (or
the gateway's start), never the bare `alembic` command: the adoption of pre-Alembic databases
and the Postgres migration lock live in `upgrade`."""

from __future__ import annotations

from alembic import context

from gateway.db.tables import Base, include_name

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run the migrations with `python -m gateway migrate` (DATABASE_URL)")
context.configure(connection=connection, target_metadata=Base.metadata,
                  include_name=include_name,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
