"""An index of when each task of a run ended, for the run page's live updates: a page
asks for the tasks that ended since its last look without reading the whole run. Only
ended rows are in it, so queueing and starting a task leave it alone.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ENDED = sa.text("finished_at IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_qflow_tasks_finished", "qflow_tasks", ["run_id", "finished_at"],
                    sqlite_where=_ENDED, postgresql_where=_ENDED)


def downgrade() -> None:
    op.drop_index("ix_qflow_tasks_finished", "qflow_tasks")
