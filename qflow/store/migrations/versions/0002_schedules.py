"""Schedules: one current run per (workflow, logical time), per-workflow pause state.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_CURRENT = sa.text("superseded_by IS NULL")


def upgrade() -> None:
    op.add_column("qflow_runs", sa.Column("superseded_by", sa.String(32), nullable=True))
    op.create_index("uq_qflow_runs_workflow_logical", "qflow_runs",
                    ["workflow", "logical_time"], unique=True,
                    sqlite_where=_CURRENT, postgresql_where=_CURRENT)
    op.create_table(
        "qflow_schedules",
        sa.Column("workflow", sa.String(200), primary_key=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("paused_at", sa.DateTime(), nullable=True),
        sa.Column("unpaused_at", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("qflow_schedules")
    op.drop_index("uq_qflow_runs_workflow_logical", table_name="qflow_runs")
    with op.batch_alter_table("qflow_runs") as batch:
        batch.drop_column("superseded_by")
