"""tus uploads on object storage (`gateway.intake.tus_parts`): one S3 multipart upload per tus
upload.

- `uploads.multipart_id`: the S3 multipart upload id, so any gateway can add parts to it.
- `upload_parts`: one row per stored part (number, etag), so recording a part costs one insert
  whatever the upload's size; dropped with its upload (`ON DELETE CASCADE`).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    columns = {c["name"] for c in inspector.get_columns("uploads")}
    if "multipart_id" not in columns:  # (a pre-Alembic uploads table made just now has it)
        op.add_column("uploads", sa.Column("multipart_id", sa.String(length=1024),
                                           nullable=True))
    if not inspector.has_table("upload_parts"):
        op.create_table(
            "upload_parts",
            sa.Column("upload_id", sa.String(length=32), nullable=False),
            sa.Column("number", sa.Integer(), nullable=False),
            sa.Column("etag", sa.String(length=256), nullable=False),
            sa.ForeignKeyConstraint(["upload_id"], ["uploads.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("upload_id", "number"),
        )


def downgrade() -> None:
    op.drop_table("upload_parts")
    op.drop_column("uploads", "multipart_id")
