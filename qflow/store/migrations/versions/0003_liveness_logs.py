"""Worker heartbeats, unsent-message marks and per-attempt logs.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qflow_workers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
    )
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.add_column(sa.Column("unsent", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.create_index("ix_qflow_tasks_unsent", "qflow_tasks", ["unsent"])
    with op.batch_alter_table("qflow_attempts") as batch:
        batch.add_column(sa.Column("log", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("qflow_attempts") as batch:
        batch.drop_column("log")
    op.drop_index("ix_qflow_tasks_unsent", table_name="qflow_tasks")
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.drop_column("unsent")
    op.drop_table("qflow_workers")
