"""Indexes that deleting a run's rows needs: a task's pool waits by its task id (the
primary key starts with the pool, so each deleted task row made PostgreSQL's foreign-key
check scan the whole table), and asset updates by run (prune keeps a run whose update an
unfinished run consumed, and looks that up for every candidate run).

Revision ID: 0013
Revises: 0012
"""
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_qflow_pool_waits_task", "qflow_pool_waits", ["task_id"])
    op.create_index("ix_qflow_asset_events_run", "qflow_asset_events", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_qflow_asset_events_run", "qflow_asset_events")
    op.drop_index("ix_qflow_pool_waits_task", "qflow_pool_waits")
