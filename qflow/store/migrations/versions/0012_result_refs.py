"""Results outside the DB: a task row may reference the object its value was written to
(result_store) instead of holding the value: URL, size, sha256 and serializer, as JSON.

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.add_column(sa.Column("result_ref", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.drop_column("result_ref")
