"""Bounded dispatch sized from the live workers (``dispatch_window = "auto"``): a worker
records how many processes it runs (``concurrency``; NULL: unknown, counted as none), and
a run sized that way keeps its queues (``window_queues``; NULL: a fixed window), whose
live workers' processes its window follows (qflow.store.sizing).

Revision ID: 0018
Revises: 0016
"""
import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("qflow_workers") as batch:
        batch.add_column(sa.Column("concurrency", sa.Integer(), nullable=True))
    with op.batch_alter_table("qflow_runs") as batch:
        batch.add_column(sa.Column("window_queues", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("qflow_runs") as batch:
        batch.drop_column("window_queues")
    with op.batch_alter_table("qflow_workers") as batch:
        batch.drop_column("concurrency")
