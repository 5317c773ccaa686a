"""Assets and sensors: every update of an asset (by a task's success or from outside),
which updates each asset-scheduled workflow has consumed (one run per update at most:
the primary key), and when a sensor's attempt began sensing (its timeout counts from
then, across pokes).

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qflow_asset_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("asset", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("node", sa.String(250), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_qflow_asset_events_asset", "qflow_asset_events", ["asset", "id"])
    op.create_table(
        "qflow_asset_consumed",
        sa.Column("workflow", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.Integer(),
                  sa.ForeignKey("qflow_asset_events.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("run_id", sa.String(32), nullable=False),
    )
    op.create_index("ix_qflow_asset_consumed_run", "qflow_asset_consumed", ["run_id"])
    op.create_table(
        "qflow_sensing",
        sa.Column("task_id", sa.Integer(),
                  sa.ForeignKey("qflow_tasks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("number", sa.Integer(), primary_key=True),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("pokes", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("qflow_sensing")
    op.drop_index("ix_qflow_asset_consumed_run", "qflow_asset_consumed")
    op.drop_table("qflow_asset_consumed")
    op.drop_index("ix_qflow_asset_events_asset", "qflow_asset_events")
    op.drop_table("qflow_asset_events")
