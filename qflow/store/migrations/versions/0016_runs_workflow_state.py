"""Runs by workflow and state, newest first: /qflow/metrics counts the runs of each
(workflow, state) from this index alone (an index-only scan, not a read of every run
row per scrape); the runs list filtered by workflow and state pages through it in
order; a scheduler counts a workflow's active runs in it.

Revision ID: 0016
Revises: 0015
"""
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_qflow_runs_workflow_state", "qflow_runs",
                    ["workflow", "state", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_qflow_runs_workflow_state", "qflow_runs")
