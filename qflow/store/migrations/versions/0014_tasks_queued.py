"""An index of when each queued task of a run was queued, for the run page's live
updates: a page asks for the tasks queued since its last look (pending -> queued, as
a map expands or a pool admits a waiting task) without reading the whole run. Only
queued rows are in it: a task leaves it when a worker claims it.

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_QUEUED = sa.text("state = 'queued'")


def upgrade() -> None:
    op.create_index("ix_qflow_tasks_queued", "qflow_tasks", ["run_id", "queued_at"],
                    sqlite_where=_QUEUED, postgresql_where=_QUEUED)


def downgrade() -> None:
    op.drop_index("ix_qflow_tasks_queued", "qflow_tasks")
