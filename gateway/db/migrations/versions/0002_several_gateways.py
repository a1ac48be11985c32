"""Several gateways on one Postgres: who dispatched a task, 64-bit ids and sizes, the `/jobs`
indexes.

- `tasks.dispatched_by`: the GATEWAY_ID whose claim leased the task, so a restarting gateway
  releases only its own leases (`transitions.release_dispatched`).
- 64-bit integers on Postgres where a value can pass 2^31 (`tasks.id` and its sequence,
  `uploads.length`, `jobs.total`); SQLite's integers are 64-bit already, nothing to do.
- `ix_jobs_created`, `ix_jobs_owner_created`: the newest-first `/jobs` indexes (they were
  meant to be added to older databases but never were: their `DESC` hid the column).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_WIDEN = (("tasks", "id"), ("uploads", "length"), ("jobs", "total"))


def upgrade() -> None:
    bind = op.get_bind()
    columns = {c["name"] for c in sa.inspect(bind).get_columns("tasks")}
    if "dispatched_by" not in columns:  # (a pre-Alembic tasks table made just now has it)
        op.add_column("tasks", sa.Column("dispatched_by", sa.String(length=128), nullable=True))
    if bind.dialect.name == "postgresql":
        for table, column in _WIDEN:
            op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())
        op.execute("ALTER SEQUENCE IF EXISTS tasks_id_seq AS BIGINT")
    jobs = {c["name"] for c in sa.inspect(bind).get_columns("jobs")}
    if {"created_at", "api_key_hash"} <= jobs:  # (a job table of some very old layout: none)
        op.execute("CREATE INDEX IF NOT EXISTS ix_jobs_created ON jobs (created_at DESC, id)")
        op.execute("CREATE INDEX IF NOT EXISTS ix_jobs_owner_created "
                   "ON jobs (api_key_hash, created_at DESC, id)")


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_created", table_name="jobs")
    op.drop_index("ix_jobs_created", table_name="jobs")
    op.drop_column("tasks", "dispatched_by")
