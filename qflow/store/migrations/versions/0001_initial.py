"""Initial schema: runs, task instances, edges, attempts.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(), nullable=True)


def upgrade() -> None:
    op.create_table(
        "qflow_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        _ts("started_at"), _ts("finished_at"), _ts("logical_time"),
        sa.Column("tasks_total", sa.Integer(), nullable=False),
        sa.Column("tasks_left", sa.Integer(), nullable=False),
        sa.Column("tasks_failed", sa.Integer(), nullable=False),
        sa.Column("tasks_canceled", sa.Integer(), nullable=False),
    )
    op.create_index("ix_qflow_runs_workflow_created", "qflow_runs", ["workflow", "created_at"])
    op.create_index("ix_qflow_runs_state", "qflow_runs", ["state"])
    op.create_index("ix_qflow_runs_created", "qflow_runs", ["created_at"])
    op.create_table(
        "qflow_tasks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32),
                  sa.ForeignKey("qflow_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("node", sa.String(250), nullable=False),
        sa.Column("task", sa.String(500), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("trigger_rule", sa.String(40), nullable=False),
        sa.Column("queue", sa.String(200), nullable=True),
        sa.Column("call", sa.Text(), nullable=False),
        sa.Column("options", sa.Text(), nullable=True),
        sa.Column("n_parents", sa.Integer(), nullable=False),
        sa.Column("up_succeeded", sa.Integer(), nullable=False),
        sa.Column("up_failed", sa.Integer(), nullable=False),
        sa.Column("up_skipped", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("celery_id", sa.String(64), nullable=True),
        _ts("queued_at"), _ts("started_at"), _ts("finished_at"),
        sa.UniqueConstraint("run_id", "node", name="uq_qflow_tasks_run_node"),
    )
    op.create_index("ix_qflow_tasks_state", "qflow_tasks", ["state"])
    op.create_table(
        "qflow_edges",
        sa.Column("run_id", sa.String(32),
                  sa.ForeignKey("qflow_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("parent", sa.String(250), primary_key=True),
        sa.Column("child", sa.String(250), primary_key=True),
    )
    op.create_index("ix_qflow_edges_child", "qflow_edges", ["run_id", "child"])
    op.create_table(
        "qflow_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer(),
                  sa.ForeignKey("qflow_tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("celery_id", sa.String(64), nullable=True),
        _ts("started_at"), _ts("finished_at"),
        sa.Column("error_type", sa.String(200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.UniqueConstraint("task_id", "number", name="uq_qflow_attempts_task_number"),
    )


def downgrade() -> None:
    op.drop_table("qflow_attempts")
    op.drop_table("qflow_edges")
    op.drop_table("qflow_tasks")
    op.drop_table("qflow_runs")
