"""Concurrency limits: pools with slots, tasks waiting for a slot, runs held back.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qflow_pools",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
    )
    op.create_table(
        "qflow_pool_waits",
        sa.Column("pool", sa.String(200), primary_key=True),
        sa.Column("task_id", sa.Integer(),
                  sa.ForeignKey("qflow_tasks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("since", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_qflow_pool_waits_since", "qflow_pool_waits", ["pool", "since"])
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.add_column(sa.Column("pools", sa.Text(), nullable=True))
        batch.add_column(sa.Column("holding", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("qflow_runs") as batch:
        batch.add_column(sa.Column("held", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.create_index("ix_qflow_runs_held", "qflow_runs", ["workflow", "held", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_qflow_runs_held", table_name="qflow_runs")
    with op.batch_alter_table("qflow_runs") as batch:
        batch.drop_column("held")
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.drop_column("holding")
        batch.drop_column("pools")
    op.drop_index("ix_qflow_pool_waits_since", table_name="qflow_pool_waits")
    op.drop_table("qflow_pool_waits")
    op.drop_table("qflow_pools")
