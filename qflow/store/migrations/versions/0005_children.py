"""Each task row lists its children, so recording an outcome need not read qflow_edges.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows of runs recorded before this keep NULL: their children are looked up in
    # qflow_edges as before.
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.add_column(sa.Column("children", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.drop_column("children")
