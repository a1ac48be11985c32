"""Indexes SQLite plans right without statistics: the claim's and the result cache's (issue 17).

- `ix_tasks_job_queue` on `tasks (job_id, state, id, next_attempt_at)` replaces
  `ix_tasks_job_state` on `(job_id, state)`, which it serves too (its first two columns).
- Why: the claim (`gateway.db.transitions.claim`) leases a job's first `n` due tasks of a
  stage's queue, in id order, in one UPDATE. Without statistics (the gateway never runs
  ANALYZE) SQLite drove that UPDATE from a state index and visited every queued task of the
  stage for each claim: 7 ms with 50 000 queued, under the write lock. The claim now finds
  its rows by id, and this index hands out the first `n` in order with their due time,
  without touching the table (with the old index alone SQLite sorted the whole queue
  instead: 47 ms). 0.8 ms a claim at any depth.
- `ix_tasks_cache_key_state` on `tasks (cache_key, state)` replaces `ix_tasks_cache_key` on
  `(cache_key)`. The result cache asks, for each batch of 32 tasks, which of their keys a
  matted task already has (`repo.done_outputs_for_keys`: `cache_key IN (…) AND state IN
  (…)`). SQLite answered it from a state index, reading every matted task of every job: 45
  ms a batch with 50 000 matted, growing with each job done. With both columns in one index
  it looks up the keys: 0.06–0.25 ms.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # idempotent: a pre-Alembic database adopted just now was made with the new index
    op.execute("DROP INDEX IF EXISTS ix_tasks_job_state")
    op.execute("CREATE INDEX IF NOT EXISTS ix_tasks_job_queue "
               "ON tasks (job_id, state, id, next_attempt_at)")
    op.execute("DROP INDEX IF EXISTS ix_tasks_cache_key")
    op.execute("CREATE INDEX IF NOT EXISTS ix_tasks_cache_key_state ON tasks (cache_key, state)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_tasks_cache_key_state")
    op.execute("CREATE INDEX IF NOT EXISTS ix_tasks_cache_key ON tasks (cache_key)")
    op.execute("DROP INDEX IF EXISTS ix_tasks_job_queue")
    op.execute("CREATE INDEX IF NOT EXISTS ix_tasks_job_state ON tasks (job_id, state)")
