"""An index of each run's tasks that `qflow status` lists first when the run has too many
to list whole: failed, upstream_failed, retrying, running and sensing ones, by run and
creation order. Partial: a run's bulk of pending, queued and succeeded rows is not in it,
so a run of a million tasks finds its few failed ones without reading the rest.

Revision ID: 0019
Revises: 0017
"""
import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0017"
branch_labels = None
depends_on = None

_LOOK = sa.text("state IN ('failed', 'upstream_failed', 'retrying', 'running', 'sensing')")


def upgrade() -> None:
    op.create_index("ix_qflow_tasks_look", "qflow_tasks", ["run_id", "id"],
                    postgresql_where=_LOOK, sqlite_where=_LOOK)


def downgrade() -> None:
    op.drop_index("ix_qflow_tasks_look", "qflow_tasks")
