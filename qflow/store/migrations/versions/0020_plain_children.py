"""A task whose children all run once their parents succeeded (``plain_children``): its
success records itself and releases them in one statement. Rows written before are
false and released as before.

Revision ID: 0020
Revises: 0019
"""
import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not in a batch: SQLite would rebuild the table, and its attempts (ON DELETE
    # CASCADE) would go with the old one. A constant default is a plain ADD COLUMN on
    # both, without rewriting PostgreSQL's rows.
    op.add_column("qflow_tasks", sa.Column("plain_children", sa.Boolean(), nullable=False,
                                           server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.drop_column("plain_children")
