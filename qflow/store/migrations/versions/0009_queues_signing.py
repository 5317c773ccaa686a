"""Workers record the queues they serve, so that `trigger` and `status` can say when a
task waits on a queue no live worker serves; a run records whether the process that
created it signed its messages, so that a signing worker's reconciler never re-sends,
signed, messages its peers refused as unsigned.

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: a worker from before this revision (or an async loop's row): queues unknown.
    with op.batch_alter_table("qflow_workers") as batch:
        batch.add_column(sa.Column("queues", sa.Text(), nullable=True))
    # Runs recorded before this revision count as signed: they are re-sent as before.
    with op.batch_alter_table("qflow_runs") as batch:
        batch.add_column(sa.Column("unsigned", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("qflow_runs") as batch:
        batch.drop_column("unsigned")
    with op.batch_alter_table("qflow_workers") as batch:
        batch.drop_column("queues")
