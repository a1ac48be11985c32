"""The sizes of a task's outputs, recorded when it completes (issue 17, the download).

- `tasks.output_files`, `tasks.output_bytes`, `tasks.output_name_bytes`: how many of the
  task's outputs go into the job's zip, their sizes and their names' lengths, summed; a
  finished job's zip length is then one aggregate query (`gateway.results.zip_stream`).
  Rows that exist before this revision keep NULL: their job's zip is sized as before, by a
  `stat` per file (nothing to backfill).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = (("output_files", sa.Integer()), ("output_bytes", sa.BigInteger()),
            ("output_name_bytes", sa.Integer()))


def upgrade() -> None:
    bind = op.get_bind()
    columns = {c["name"] for c in sa.inspect(bind).get_columns("tasks")}
    for name, type_ in _COLUMNS:
        if name not in columns:  # (a pre-Alembic tasks table made just now has them)
            if bind.dialect.name == "sqlite":
                type_ = sa.Integer()  # SQLite's integers are 64-bit (tables.BigInt)
            op.add_column("tasks", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    for name, _ in reversed(_COLUMNS):
        op.drop_column("tasks", name)
