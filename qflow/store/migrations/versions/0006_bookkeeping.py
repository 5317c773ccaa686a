"""A task's bookkeeping leaves its options: how many elements a mapped node expanded into,
and the first attempt of the current resume, get columns of their own.

Revision ID: 0006
Revises: 0005
"""
import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TASKS = sa.table("qflow_tasks", sa.column("id", sa.Integer), sa.column("options", sa.Text),
                  sa.column("expanded", sa.Integer), sa.column("first_attempt", sa.Integer))


def upgrade() -> None:
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.add_column(sa.Column("expanded", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("first_attempt", sa.Integer(), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_TASKS.c.id, _TASKS.c.options).where(
        _TASKS.c.options.like("%expanded%") | _TASKS.c.options.like("%first_attempt%")))
    for row in rows.all():
        options = json.loads(row.options)
        expanded = (options.get("map") or {}).pop("expanded", None)
        first = options.pop("first_attempt", None)
        conn.execute(sa.update(_TASKS).where(_TASKS.c.id == row.id).values(
            options=json.dumps(options), expanded=expanded, first_attempt=first))


def downgrade() -> None:
    with op.batch_alter_table("qflow_tasks") as batch:
        batch.drop_column("first_attempt")
        batch.drop_column("expanded")
