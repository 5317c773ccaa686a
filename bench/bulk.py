"""Fill a PostgreSQL results DB with many runs fast: copies of one real run's rows.

A template run (made the ordinary way: triggered and executed) is cloned ``count`` times
by ``INSERT ... SELECT`` over ``generate_series``, on the server: its run row, task rows,
attempt rows and edges, each copy with a run id of its own and every timestamp shifted
so that the copies are spread evenly between ``newest`` and ``oldest``. No task is
executed, so a million task rows take a minute instead of hours, and the rows look like
real ones (same widths, same JSON, same states), which is what sizes and plans depend on.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from typing import Callable, Iterator

from sqlalchemy import Connection, DateTime, Table, text

from qflow.store.models import attempts, edges, runs, tasks

CHUNK = 20_000      # runs per transaction: progress to print, and bounded statements


def _select_list(table: Table, alias: str, overrides: dict[str, str],
                 skip: tuple[str, ...] = ()) -> tuple[str, str]:
    """(column list, select list) copying ``alias``'s row: DateTime columns shifted by
    ``shift`` (a column of the series), ``overrides`` as given, ``skip`` left to their
    defaults (the serial ids)."""
    names, values = [], []
    for col in table.columns:
        if col.name in skip:
            continue
        names.append(col.name)
        if col.name in overrides:
            values.append(overrides[col.name])
        elif isinstance(col.type, DateTime):
            values.append(f"{alias}.{col.name} + s.shift")
        else:
            values.append(f"{alias}.{col.name}")
    return ", ".join(names), ", ".join(values)


def _series(first: int, last: int, seed: str) -> str:
    """One row per copy: g, its run id, and how far its timestamps move."""
    return (f"(SELECT g, md5('{seed}' || g)::varchar(32) AS id, "
            f"(CAST(:newest AS timestamp) - (g - 1) * CAST(:step AS interval)) - t0.created_at "
            f"AS shift FROM generate_series({first}, {last}) AS g, "
            f"(SELECT created_at FROM qflow_runs WHERE id = :template) AS t0) AS s")


def clone_runs(conn_factory: Callable[[], Connection], template: str, count: int,
               newest: dt.datetime, oldest: dt.datetime, run_state: str | None = None,
               task_state: str | None = None,
               progress: Callable[[int], None] | None = None) -> None:
    """Insert ``count`` copies of run ``template`` created between ``newest`` and
    ``oldest`` (naive UTC), in transactions of :data:`CHUNK` runs from
    ``conn_factory()`` (a context manager giving a connection in a transaction).
    ``run_state`` and ``task_state`` override the copies' states (an unfinished run:
    ``running`` with ``pending`` tasks, which no upkeep touches).

    A copy's task ids are computed (after the highest id so far, in the template's
    order), so its attempts find their task by arithmetic rather than by a lookup of
    (run, node): the fill needs no index, and :func:`bare_tables` can drop them all."""
    seed = uuid.uuid4().hex[:8]
    step = (newest - oldest) / max(count - 1, 1)
    params = {"template": template, "newest": newest, "step": step}
    with conn_factory() as conn:
        base, width = conn.execute(text(
            "SELECT (SELECT coalesce(max(id), 0) FROM qflow_tasks), "
            "(SELECT count(*) FROM qflow_tasks WHERE run_id = :template)"),
            params).one()
    new_id = f"{base} + (s.g - 1) * {width} + t.rank"
    ranked = ("(SELECT q.*, row_number() OVER (ORDER BY q.id) AS rank FROM qflow_tasks q "
              "WHERE q.run_id = :template) AS t")
    run_cols, run_vals = _select_list(runs, "r", {
        "id": "s.id", **({"state": f"'{run_state}'"} if run_state else {})})
    task_cols, task_vals = _select_list(tasks, "t", {
        "id": new_id, "run_id": "s.id",
        **({"state": f"'{task_state}'"} if task_state else {})})
    att_cols, att_vals = _select_list(attempts, "a", {"task_id": new_id}, skip=("id",))
    edge_cols, edge_vals = _select_list(edges, "e", {"run_id": "s.id"})
    for first in range(1, count + 1, CHUNK):
        last = min(first + CHUNK - 1, count)
        series = _series(first, last, seed)
        with conn_factory() as conn:
            conn.execute(text(f"INSERT INTO qflow_runs ({run_cols}) SELECT {run_vals} "
                              f"FROM qflow_runs r, {series} WHERE r.id = :template"), params)
            conn.execute(text(f"INSERT INTO qflow_tasks ({task_cols}) SELECT {task_vals} "
                              f"FROM {ranked}, {series} ORDER BY s.g, t.rank"), params)
            conn.execute(text(
                f"INSERT INTO qflow_attempts ({att_cols}) SELECT {att_vals} "
                f"FROM qflow_attempts a JOIN {ranked} ON t.id = a.task_id, {series} "
                f"ORDER BY s.g, a.id"), params)
            conn.execute(text(f"INSERT INTO qflow_edges ({edge_cols}) SELECT {edge_vals} "
                              f"FROM qflow_edges e, {series} WHERE e.run_id = :template"),
                         params)
        if progress:
            progress(last)
    with conn_factory() as conn:             # ids taken by hand: the sequence follows
        conn.execute(text("SELECT setval(pg_get_serial_sequence('qflow_tasks', 'id'), "
                          "(SELECT max(id) FROM qflow_tasks))"))


BIG = ("qflow_runs", "qflow_tasks", "qflow_attempts", "qflow_edges")


@contextlib.contextmanager
def bare_tables(store, say: Callable[..., None]) -> Iterator[None]:
    """While filling: the big tables without their indexes and constraints (primary
    keys, unique keys and foreign keys, also those of other tables that point at them),
    and the server without fsync. A copied row then costs an append instead of a probe
    into each of its table's indexes (random places once they outgrow the cache) and a
    foreign-key check: 10M task rows take minutes instead of most of an hour. Afterwards
    everything is as it was: fsync back on, each index built once over the filled
    table (packed, as REINDEX leaves them, where grown ones are about a third emptier),
    the keys added, a CHECKPOINT."""
    big = list(BIG)
    with store.write() as conn:
        keys = conn.execute(text(
            "SELECT conrelid::regclass::text AS tab, conname, contype, "
            "pg_get_constraintdef(oid) AS definition FROM pg_constraint WHERE contype IN "
            "('p', 'u', 'f') AND (conrelid::regclass::text = ANY(:big) "
            "OR confrelid::regclass::text = ANY(:big)) ORDER BY contype = 'f' DESC"),
            {"big": big}).all()
        plain = conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(:big) "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"), {"big": big}).all()
        for k in keys:                        # foreign keys first: they need the others
            conn.execute(text(f'ALTER TABLE {k.tab} DROP CONSTRAINT "{k.conname}"'))
        for i in plain:
            conn.execute(text(f'DROP INDEX "{i.indexname}"'))
    _durability(store, on=False)
    try:
        yield
    finally:
        _durability(store, on=True)
        started = time.perf_counter()
        with store.write() as conn:
            conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            for i in plain:
                conn.execute(text(i.indexdef))
            # Keys before the foreign keys to them. A foreign key comes back NOT VALID:
            # the copies are consistent by construction, so checking every row again
            # would only cost time; it is enforced (and cascades) all the same.
            for k in reversed(keys):
                valid = " NOT VALID" if k.contype == "f" else ""
                conn.execute(text(f'ALTER TABLE {k.tab} ADD CONSTRAINT "{k.conname}" '
                                  f'{k.definition}{valid}'))
        with store.write(autocommit=True) as conn:
            conn.execute(text("CHECKPOINT"))
        say(f"  {len(plain)} indexes and {len(keys)} keys built in "
            f"{time.perf_counter() - started:.0f} s")


def _durability(store, on: bool) -> None:
    with store.write(autocommit=True) as conn:
        for name in ("fsync", "full_page_writes"):
            conn.execute(text(f"ALTER SYSTEM RESET {name}" if on
                              else f"ALTER SYSTEM SET {name} = off"))
        conn.execute(text("SELECT pg_reload_conf()"))


def table_rows(conn: Connection) -> dict[str, int]:
    """Exact row counts of the big tables."""
    return {t.name: conn.execute(text(f"SELECT count(*) FROM {t.name}")).scalar_one()
            for t in (runs, tasks, attempts, edges)}


def qflow_tables_size(conn: Connection) -> dict[str, int]:
    """pg_total_relation_size (heap, indexes, TOAST) of every qflow_ table, in bytes."""
    rows = conn.execute(text(
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname = current_schema() "
        "AND c.relname LIKE 'qflow\\_%'")).all()
    return {name: size for name, size in rows}


def database_size(conn: Connection) -> int:
    return conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:,.1f} MiB"


def fill(store, template: str, count: int, newest: dt.datetime, oldest: dt.datetime,
         say: Callable[..., None], run_state: str | None = None,
         task_state: str | None = None, label: str = "runs") -> None:
    """:func:`clone_runs` through a qflow Store, printing progress, then ANALYZE (so the
    planner sees the rows at once, as autovacuum would after a while)."""
    started = time.perf_counter()
    step = max(count // 5, CHUNK)

    def progress(done: int) -> None:
        if done == count or done % step < CHUNK:
            say(f"  {label}: {done:,}/{count:,} copies ({time.perf_counter() - started:.0f} s)")
    clone_runs(store.write, template, count, newest, oldest, run_state, task_state, progress)
    with store.write() as conn:
        conn.execute(text("ANALYZE"))
