"""The schema as `create_all` made it before there were migrations (tables.py of that
release), with the trigger-kept task counters.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.db.tables import create_counters

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('filename', sa.String(length=1024), nullable=False),
    sa.Column('upload_path', sa.String(length=1024), nullable=False),
    sa.Column('model', sa.String(length=512), nullable=False),
    sa.Column('output', sa.String(length=16), nullable=False),
    sa.Column('callback_url', sa.String(length=2048), nullable=True),
    sa.Column('api_key_hash', sa.String(length=64), nullable=True),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.Column('callback_done', sa.Boolean(), nullable=False),
    sa.Column('callback_attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('callback_error', sa.Text(), nullable=True),
    sa.Column('ingest_attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('format', sa.String(length=8), server_default='png', nullable=False),
    sa.Column('max_size', sa.Integer(), nullable=True),
    sa.Column('background', sa.String(length=16), nullable=True),
    sa.Column('crop', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_jobs_state', 'jobs', ['state'], unique=False)
    op.create_table('uploads',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('length', sa.Integer(), nullable=True),
    sa.Column('filename', sa.String(length=1024), nullable=False),
    sa.Column('metadata_json', sa.JSON(), nullable=True),
    sa.Column('api_key_hash', sa.String(length=64), nullable=True),
    sa.Column('completed_at', sa.Float(), nullable=True),
    sa.Column('job_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('tasks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('path', sa.String(length=4096), nullable=False),
    sa.Column('input', sa.String(length=4096), nullable=False),
    sa.Column('gt', sa.String(length=4096), nullable=True),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('retry_count', sa.Integer(), nullable=False),
    sa.Column('lease_expires_at', sa.Float(), nullable=True),
    sa.Column('next_attempt_at', sa.Float(), nullable=False),
    sa.Column('failed_stage', sa.String(length=16), nullable=True),
    sa.Column('matting_output', sa.String(length=4096), nullable=True),
    sa.Column('compare_output', sa.String(length=4096), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('fallback', sa.JSON(), nullable=True),
    sa.Column('queued_at', sa.Float(), nullable=False),
    sa.Column('matting_dispatched_at', sa.Float(), nullable=True),
    sa.Column('matting_started_at', sa.Float(), nullable=True),
    sa.Column('matting_finished_at', sa.Float(), nullable=True),
    sa.Column('matting_worker', sa.String(length=128), nullable=True),
    sa.Column('matting_batch_size', sa.Integer(), nullable=True),
    sa.Column('comparison_dispatched_at', sa.Float(), nullable=True),
    sa.Column('comparison_started_at', sa.Float(), nullable=True),
    sa.Column('comparison_finished_at', sa.Float(), nullable=True),
    sa.Column('comparison_worker', sa.String(length=128), nullable=True),
    sa.Column('completed_at', sa.Float(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('cache_key', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_tasks_cache_key', 'tasks', ['cache_key'], unique=False)
    op.create_index('ix_tasks_claim', 'tasks', ['state', 'next_attempt_at'], unique=False)
    op.create_index('ix_tasks_job', 'tasks', ['job_id'], unique=False)
    op.create_index('ix_tasks_job_path', 'tasks', ['job_id', 'path'], unique=False)
    op.create_index('ix_tasks_job_state', 'tasks', ['job_id', 'state'], unique=False)
    op.create_index('ix_tasks_lease', 'tasks', ['state', 'lease_expires_at'], unique=False)
    create_counters(op.get_bind())


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS task_counts")
    op.drop_table("tasks")
    op.drop_table("uploads")
    op.drop_table("jobs")
