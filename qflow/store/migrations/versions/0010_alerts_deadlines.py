"""Durable alerts (an outbox written with the state change) and deadlines.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qflow_alerts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("run_id", sa.String(32),
                  sa.ForeignKey("qflow_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_at", sa.DateTime(), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("gave_up_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.UniqueConstraint("key", name="uq_qflow_alerts_key"),
    )
    op.create_index("ix_qflow_alerts_due", "qflow_alerts", ["next_at"],
                    postgresql_where=sa.text("delivered_at IS NULL AND gave_up_at IS NULL"),
                    sqlite_where=sa.text("delivered_at IS NULL AND gave_up_at IS NULL"))
    op.create_index("ix_qflow_alerts_run", "qflow_alerts", ["run_id"])
    with op.batch_alter_table("qflow_runs") as batch:
        batch.add_column(sa.Column("deadline_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("late", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.add_column(sa.Column("deadline_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("late", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.create_index("ix_qflow_runs_deadline", "qflow_runs", ["deadline_at"],
                    postgresql_where=sa.text("late = false AND deadline_at IS NOT NULL"),
                    sqlite_where=sa.text("late = 0 AND deadline_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_qflow_runs_deadline", "qflow_runs")
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.drop_column("late")
        batch.drop_column("deadline_s")
    with op.batch_alter_table("qflow_runs") as batch:
        batch.drop_column("late")
        batch.drop_column("deadline_at")
    op.drop_index("ix_qflow_alerts_run", "qflow_alerts")
    op.drop_index("ix_qflow_alerts_due", "qflow_alerts")
    op.drop_table("qflow_alerts")
