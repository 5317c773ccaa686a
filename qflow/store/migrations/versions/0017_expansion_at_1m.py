"""Cheaper rows for a big run (a million tasks committed in one transaction): the task
rows and edges lose their foreign keys to qflow_runs, which PostgreSQL checked row by
row (retention deletes a run's rows itself, and nothing else deletes a run); the two
full indexes that serve only a few rows at a time become partial: unsent tasks
(``ix_qflow_tasks_unsent``) and the tasks with a message or a worker
(``ix_qflow_tasks_open``, in place of ``ix_qflow_tasks_state`` on every row).

SQLite cannot drop a constraint, and rebuilding qflow_tasks would cascade the drop of
the old table to every attempt (foreign keys are on in qflow's connections): the
constraint is taken out of the table's stored definition instead, as SQLite documents
for removing a foreign key (the rows on disk do not change).

Revision ID: 0017
Revises: 0018
"""
import re

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0018"
branch_labels = None
depends_on = None

_TABLES = ("qflow_tasks", "qflow_edges")
_FK_SQL = "FOREIGN KEY(run_id) REFERENCES qflow_runs (id) ON DELETE CASCADE"
_OPEN = sa.text("state IN ('queued', 'running', 'retrying', 'sensing')")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_schema(_without_fk)
    else:
        for table in _TABLES:
            op.drop_constraint(_fk_name(table), table, type_="foreignkey")
    op.drop_index("ix_qflow_tasks_unsent", "qflow_tasks")
    op.drop_index("ix_qflow_tasks_state", "qflow_tasks")
    op.create_index("ix_qflow_tasks_open", "qflow_tasks", ["state"],
                    postgresql_where=_OPEN, sqlite_where=_OPEN)
    op.create_index("ix_qflow_tasks_unsent", "qflow_tasks", ["id"],
                    postgresql_where=sa.text("unsent"), sqlite_where=sa.text("unsent = 1"))


def downgrade() -> None:
    op.drop_index("ix_qflow_tasks_unsent", "qflow_tasks")
    op.drop_index("ix_qflow_tasks_open", "qflow_tasks")
    op.create_index("ix_qflow_tasks_state", "qflow_tasks", ["state"])
    op.create_index("ix_qflow_tasks_unsent", "qflow_tasks", ["unsent"])
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_schema(_with_fk)
        return
    for table in _TABLES:      # rows whose run is gone would fail the check: drop them
        op.execute(f"DELETE FROM {table} WHERE NOT EXISTS (SELECT 1 FROM qflow_runs "
                   f"WHERE qflow_runs.id = {table}.run_id)")
        op.create_foreign_key(None, table, "qflow_runs", ["run_id"], ["id"],
                              ondelete="CASCADE")


def _fk_name(table: str) -> str:
    found = [fk["name"] for fk in sa.inspect(op.get_bind()).get_foreign_keys(table)
             if fk["referred_table"] == "qflow_runs"]
    if len(found) != 1:
        raise RuntimeError(f"{table}: expected one foreign key to qflow_runs, found {found}")
    return found[0]


def _without_fk(sql: str) -> str:
    new, n = re.subn(r",\s*" + re.escape(_FK_SQL), "", sql)
    if n != 1:
        raise RuntimeError(f"the stored definition has no {_FK_SQL}: {sql}")
    return new


def _with_fk(sql: str) -> str:
    body = sql.rstrip()
    if not body.endswith(")"):
        raise RuntimeError(f"unexpected stored definition: {sql}")
    return body[:-1].rstrip() + f", \n\t{_FK_SQL}\n)"


def _sqlite_schema(change) -> None:
    """Rewrite the stored CREATE TABLE of the task rows and edges with ``change``, the
    way https://sqlite.org/lang_altertable.html#otheralter describes for constraints that
    do not change what is on disk; the new schema version makes every connection read
    it again."""
    conn = op.get_bind()
    version = conn.exec_driver_sql("PRAGMA schema_version").scalar()
    conn.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        for table in _TABLES:
            sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' "
                                       "AND name = ?", (table,)).scalar()
            conn.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' "
                                 "AND name = ?", (change(sql), table))
        conn.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        conn.exec_driver_sql("PRAGMA writable_schema = OFF")
    if conn.exec_driver_sql("PRAGMA integrity_check").scalar() != "ok":
        raise RuntimeError("SQLite's integrity check failed after the schema change")
