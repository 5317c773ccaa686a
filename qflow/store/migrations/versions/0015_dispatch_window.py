"""Bounded dispatch: a run publishes at most ``dispatch_window`` of its tasks at a time.
The run keeps its window and how many of its tasks hold a place in it (``in_flight``) or
wait for one (``backlog``); a task waiting for a place is ``held_back`` (queued, no
message), found in order of its ``priority`` by a partial index.

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("qflow_runs") as batch:
        batch.add_column(sa.Column("dispatch_window", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("in_flight", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("backlog", sa.Integer(), nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.add_column(sa.Column("held_back", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False,
                                   server_default="0"))
    op.create_index("ix_qflow_tasks_held_back", "qflow_tasks",
                    ["run_id", sa.text("priority DESC"), "id"],
                    postgresql_where=sa.text("held_back"),
                    sqlite_where=sa.text("held_back = 1"))


def downgrade() -> None:
    op.drop_index("ix_qflow_tasks_held_back", "qflow_tasks")
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.drop_column("priority")
        batch.drop_column("held_back")
    with op.batch_alter_table("qflow_runs") as batch:
        batch.drop_column("backlog")
        batch.drop_column("in_flight")
        batch.drop_column("dispatch_window")
