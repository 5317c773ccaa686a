"""The schema a big run is cheap to write into: no foreign key from the task rows and
edges to their run, and partial indexes that the queries across every run still use
(PostgreSQL's generic plans included). Real SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlalchemy as sa
from alembic import command
from test_store import migrated

from qflow.store import Store, audit, deadlines, liveness, metrics
from qflow.store.migrate import _alembic_config, current_revision, head
from qflow.store.models import OPEN_STATES, attempts, edges, runs, tasks

NOW = dt.datetime(2026, 11, 30, 10)


def _upgrade(store: Store, revision: str) -> None:
    cfg = _alembic_config()
    with store.write() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def _a_run_as_0016_wrote_it(conn, run_id: str) -> None:
    """A run with two tasks, an edge between them and an attempt, in the columns that
    revision 0016 has."""
    conn.execute(sa.insert(runs).values(id=run_id, workflow="w", state="running",
                                        params="{}", created_at=NOW, tasks_total=2,
                                        tasks_left=1))
    # The columns named, not the model's: it has columns 0016 had not.
    old_tasks = sa.table("qflow_tasks", *map(sa.column, (
        "run_id", "node", "task", "state", "trigger_rule", "call", "n_parents",
        "up_succeeded", "up_failed", "up_skipped", "attempts")))
    for node, state in (("a", "succeeded"), ("b", "queued")):
        conn.execute(sa.insert(old_tasks).values(
            run_id=run_id, node=node, task="t", state=state, trigger_rule="all_success",
            call="{}", n_parents=int(node == "b"), up_succeeded=0, up_failed=0,
            up_skipped=0, attempts=int(node == "a")))
    conn.execute(sa.insert(edges).values(run_id=run_id, parent="a", child="b"))
    task_a = conn.execute(sa.select(tasks.c.id).where(tasks.c.node == "a")).scalar_one()
    conn.execute(sa.insert(attempts).values(task_id=task_a, number=1, state="succeeded"))


def _counts(store: Store) -> dict[str, int]:
    with store.read() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in (runs, tasks, edges, attempts)}


def test_upgrading_a_db_with_runs_keeps_every_row_and_drops_only_the_run_keys(db_url):
    store = Store(db_url)
    _upgrade(store, "0016")
    with store.write() as conn:
        _a_run_as_0016_wrote_it(conn, "r" * 32)
    assert _counts(store) == {"qflow_runs": 1, "qflow_tasks": 2, "qflow_edges": 1,
                              "qflow_attempts": 1}
    _upgrade(store, "head")
    assert current_revision(store) == head()
    # SQLite would have deleted the attempt had the task table been dropped and rebuilt.
    assert _counts(store) == {"qflow_runs": 1, "qflow_tasks": 2, "qflow_edges": 1,
                              "qflow_attempts": 1}
    with store.engine.connect() as conn:
        found = sa.inspect(conn)
        referred = {t: [fk["referred_table"] for fk in found.get_foreign_keys(t)]
                    for t in ("qflow_tasks", "qflow_edges", "qflow_attempts")}
        indexes = {ix["name"] for t in ("qflow_tasks", "qflow_edges")
                   for ix in found.get_indexes(t)}
    assert referred == {"qflow_tasks": [], "qflow_edges": [], "qflow_attempts": ["qflow_tasks"]}
    # the claim reads a task's parents by ix_qflow_edges_child
    assert {"ix_qflow_tasks_open", "ix_qflow_tasks_unsent", "ix_qflow_edges_child"} <= indexes
    assert "ix_qflow_tasks_state" not in indexes
    with pytest.raises(sa.exc.IntegrityError), store.write() as conn:
        # the attempts' own key to their task still holds
        conn.execute(sa.insert(attempts).values(task_id=999_999, number=1, state="failed"))
    store.dispose()


# The types psycopg gives these values (text stays "unknown": typed by its use).
_PG_TYPES = {int: "bigint", float: "float8", bool: "boolean", dt.datetime: "timestamp",
             dt.timedelta: "interval"}


def _explained(conn, statement: str, params) -> str:
    """The plan of one statement as qflow sent it. PostgreSQL: its generic plan, as a
    prepared statement gets after a few executions, where a bound value proves nothing
    about a partial index's condition; sequential scans off, or a few rows would be read
    from the table whichever index there is."""
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
        return " | ".join(str(r[-1]) for r in rows)
    import psycopg

    names: list[str] = []

    def number(m: re.Match) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    sql = re.sub(r"%\((\w+)\)s", number, statement).replace("%%", "%")
    raw = conn.connection.driver_connection
    cur = psycopg.ClientCursor(raw)
    cur.execute("SET plan_cache_mode = force_generic_plan")
    cur.execute("SET enable_seqscan = off")
    values = [params[n] for n in names]
    types = ", ".join(_PG_TYPES.get(type(v), "unknown") for v in values)
    cur.execute(f"PREPARE qflow_explained ({types}) AS {sql}" if names else
                f"PREPARE qflow_explained AS {sql}")
    try:
        args = ", ".join(["%s"] * len(names))
        cur.execute(f"EXPLAIN EXECUTE qflow_explained({args})" if names else
                    "EXPLAIN EXECUTE qflow_explained", values)
        return " | ".join(r[0] for r in cur.fetchall())
    finally:
        cur.execute("DEALLOCATE qflow_explained")
        cur.execute("RESET plan_cache_mode")
        cur.execute("RESET enable_seqscan")


# What reads tasks across every run (sweeper, reconciler, deadlines, metrics, doctor):
# each must find its rows through a partial index, never read every task row.
ACROSS_RUNS = {
    "lost attempts": lambda c: liveness.lost_attempts(c, 30),
    "running under a message": lambda c: liveness.running_under(c, "celery-id"),
    "stale counts": lambda c: liveness.stale_counts(c, 60),
    "take stale": lambda c: liveness.take_stale(c, 60),
    "take unsent": lambda c: liveness.take_unsent(c),
    "late tasks": deadlines.mark_late,
    "open tasks by queue": lambda c: metrics.open_tasks_by_queue(c, OPEN_STATES[:3]),
    "running attempts": metrics.running_attempt_ids,
    "doctor: lost owners": lambda c: audit.lost_owners(c, 30),
    "doctor: unsent": audit.unsent,
    "doctor: queued": lambda c: audit.queued_by_queue(c, 60),
}


@pytest.mark.parametrize("name", sorted(ACROSS_RUNS))
def test_queries_across_runs_read_the_partial_indexes_of_open_or_unsent_tasks(db_url, name):
    store = migrated(db_url)
    sent: list[tuple[str, object]] = []

    def record(conn, cursor, statement, params, context, many):
        if "qflow_tasks" in statement and not statement.startswith("EXPLAIN"):
            sent.append((statement, params))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    with store.write() as conn:
        ACROSS_RUNS[name](conn)
        sa.event.remove(store.engine, "before_cursor_execute", record)
        assert sent, name
        plans = [_explained(conn, statement, params) for statement, params in sent]
    for plan in plans:
        assert re.search(r"ix_qflow_tasks_(open|unsent)", plan), plan
        assert not re.search(r"Seq Scan on qflow_tasks|SCAN qflow_tasks($| \|)", plan), plan
    store.dispose()
