"""A run as `qflow status` shows it, read on either kind of connection.

Each read runs a statement of :mod:`qflow.store.queries`: through SQLAlchemy on one of
its connections (workers, the web server, the client, `status --watch`), as rendered SQL
on a :class:`~qflow.store.plain.PlainConnection` (`qflow status`, which starts without
SQLAlchemy). The rows are the same on both; so is everything made of them here.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any, Callable, Iterator

from qflow.core.params import masked
from qflow.core.states import TERMINAL
from qflow.errors import UserError
from qflow.results import codec
from qflow.store import plain

if TYPE_CHECKING:
    from qflow.runtime import Runtime


def rows(conn: Any, name: str, **params: Any) -> list[tuple]:
    """The rows of statement ``name`` of :mod:`qflow.store.queries`."""
    if isinstance(conn, plain.PlainConnection):
        return conn.rows(name, params)
    from qflow.store.queries import statement

    return conn.execute(statement(name), params).all()


STREAM_BATCH = 2_000           # rows fetched at a time by stream()


def stream(conn: Any, name: str, **params: Any) -> Iterator[tuple]:
    """The rows of statement ``name``, fetched a batch at a time: a run's million tasks
    are never all in memory at once."""
    if isinstance(conn, plain.PlainConnection):
        yield from conn.stream(name, params, STREAM_BATCH)
        return
    from qflow.store.queries import statement

    yield from conn.execution_options(yield_per=STREAM_BATCH).execute(statement(name), params)


def iso(value: dt.datetime | None) -> str | None:
    """Stored naive-UTC time as ISO 8601 with its offset."""
    if not value:
        return None
    # The offset appended, not set by replace(): a run of 100,000 tasks has 200,000 times.
    return value.isoformat() + "+00:00" if value.tzinfo is None else \
        value.replace(tzinfo=dt.timezone.utc).isoformat()


def run_dict(row: tuple) -> dict[str, Any]:
    """A row of :data:`qflow.store.queries.RUN_COLUMNS` as `runs --json` lists it."""
    run_id, workflow, state, params, created, started, finished, logical, total, left, \
        late = row
    out = {"run_id": run_id, "workflow": workflow, "state": state,
           "params": masked(json.loads(params)), "created_at": iso(created),
           "started_at": iso(started), "finished_at": iso(finished)}
    if logical is not None:
        out["logical_time"] = iso(logical)
    if late:                           # past its @workflow(deadline=...)
        out["late"] = True
    out["tasks_total"] = total
    out["tasks_done"] = total - left
    return out


def get_run(conn: Any, run_id: str, with_tasks: bool = True,
            took: dict[str, float] | None = None) -> dict[str, Any] | None:
    """The run as `status --json` prints it, or None (``took``: see :func:`task_rows`)."""
    found = rows(conn, "run", run_id=run_id)
    if not found:
        return None
    out = run_dict(found[0])
    if with_tasks:
        _add_tasks(conn, out, took=took)
    return out


def _add_tasks(conn: Any, run: dict[str, Any], took: dict[str, float] | None = None,
               lazy: bool = False) -> None:
    """The run's tasks, each with its traceback, and what triggered it; ``lazy``: the
    tasks as an iterator of them, read while it is consumed (on this connection)."""
    traces = tracebacks(conn, run["run_id"])
    if lazy:
        run["tasks"] = _streamed(conn, run["run_id"], traces)
    else:
        run["tasks"] = task_rows(conn, run["run_id"], took)
        for task in run["tasks"]:
            task["traceback"] = traces.get(task["node"])
    run["triggered_by"] = triggered_by(conn, run["run_id"])


def _streamed(conn: Any, run_id: str, traces: dict[str, str]) -> Iterator[dict[str, Any]]:
    shown = codec.installed().shown
    try:
        for row in stream(conn, "tasks", run_id=run_id):
            task = task_dict(row, shown)
            task["traceback"] = traces.get(task["node"])
            yield task
    except plain.Unavailable as exc:     # part of the answer is out: no full path now
        raise UserError(f"reading the tasks of run {run_id!r} failed: {exc}") from None


def triggered_by(conn: Any, run_id: str) -> list[dict[str, Any]]:
    """The asset updates that started the run, oldest first (none: not started so)."""
    return [{"asset": asset, "run_id": by, "node": node, "at": iso(at)}
            for asset, by, node, at in rows(conn, "triggered_by", run_id=run_id)]


def tracebacks(conn: Any, run_id: str) -> dict[str, str]:
    """The traceback of each task's latest attempt, for the tasks whose has one."""
    shown = codec.installed().shown
    return {node: shown(text) for node, text in rows(conn, "tracebacks", run_id=run_id)}


def task_rows(conn: Any, run_id: str, took: dict[str, float] | None = None
              ) -> list[dict[str, Any]]:
    """The run's tasks as `status --json` lists them, in creation order. ``took``, if
    given, receives the seconds each task that started and ended ran (rounded to the
    millisecond, as :func:`qflow.cli.timing.summary` rounds them), from the stored times
    rather than parsed back from the strings."""
    shown = codec.installed().shown
    out = []
    # Plain tuples: no per-row attribute lookups (a map of 10,000 elements is read in
    # tens of milliseconds, not hundreds).
    for row in rows(conn, "tasks", run_id=run_id):
        out.append(task_dict(row, shown))
        start, end = row[3], row[4]
        if took is not None and start and end:
            took[row[0]] = round((end - start).total_seconds(), 3)
    return out


def task_dict(row: tuple, shown: Callable[[str], str]) -> dict[str, Any]:
    """A row of :data:`qflow.store.queries.TASK_COLUMNS` as `status --json` lists it
    (``shown``: the result codec's, for its error)."""
    node, state, tries, start, end, error, worker, celery_id, queue, late = row
    out = {"node": node, "state": state, "attempts": tries, "started_at": iso(start),
           "finished_at": iso(end), "error": None if error is None else shown(error),
           "worker": worker, "celery_id": celery_id, "queue": queue}
    if late:
        out["late"] = True
    return out


def timed_edges(conn: Any, run_id: str) -> list[tuple[str, str]]:
    """The run's (parent, child) edges into tasks that started and ended: all a critical
    path walks (:func:`qflow.cli.timing.critical_path`)."""
    return [tuple(r) for r in rows(conn, "timed_edges", run_id=run_id)]


def revision(conn: Any) -> str | None:
    """The DB's Alembic revision (an error of the driver if it has none)."""
    found = rows(conn, "revision")
    return found[0][0] if found else None


# The conditions a list of runs may have, in the order qflow.store.queries.runs_list adds
# them; each combination is a statement of its own, named by runs_name().
RUN_FILTERS = ("before", "workflow", "state", "since", "until")


def runs_name(filters: Any) -> str:
    """The name of the statement that lists runs with ``filters`` (of RUN_FILTERS)."""
    return "+".join(["runs", *(f for f in RUN_FILTERS if f in filters)])


def list_runs(conn: Any, workflow: str | None = None, state: str | None = None,
              limit: int = 20, since: dt.datetime | None = None,
              until: dt.datetime | None = None, before: str | None = None
              ) -> list[dict[str, Any]]:
    """Most recent runs first; ``since``/``until`` bound their creation time (naive UTC);
    ``before`` (a run id) asks for the runs that follow that one in this order (keyset
    paging: as fast on page 1000 as on page 1)."""
    given = {"before": before, "workflow": workflow or None, "state": state or None,
             "since": since, "until": until}
    given = {name: value for name, value in given.items() if value is not None}
    return [run_dict(r) for r in rows(conn, runs_name(given), limit=limit, **given)]


def snapshot(conn: Any, run_id: str, every: bool = True, lazy: bool = False
             ) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The run with its tasks and, once it ended, where its time went (None for an
    unknown run): what `status` shows, and each look of `status --watch`.

    A run of more tasks than :data:`qflow.store.overview.LIST_BOUND` is timed by the DB
    (its slowest tasks; no critical path) and, unless ``every``, shown as counts (see
    :mod:`qflow.store.overview`): ``counts``, ``nodes`` and, as ``tasks``, the ones worth
    a look. ``lazy``: see :func:`_add_tasks`."""
    from qflow.cli import timing  # pure functions over these dicts
    from qflow.store import overview

    run = get_run(conn, run_id, with_tasks=False)
    if run is None:
        return None
    big = overview.big(run)
    took: dict[str, float] = {}
    if big and not every:
        run["counts"], run["nodes"], run["waiting"] = overview.counts(
            conn, run_id, run["state"] in TERMINAL)
        run["tasks"] = overview.look(conn, run_id)
        run["triggered_by"] = triggered_by(conn, run_id)
    else:
        _add_tasks(conn, run, took=None if big else took, lazy=big and lazy)
    if run["state"] not in TERMINAL:
        return run, None
    if not big:
        return run, timing.summary(run, timed_edges(conn, run_id), took=took)
    # No index orders a run's tasks by how long they ran: above SLOWEST_BOUND tasks the
    # slowest are not looked for (the DB would read every row), and the summary says so.
    skip = run["tasks_total"] > overview.SLOWEST_BOUND
    return run, {"duration_seconds": timing.seconds(run["started_at"], run["finished_at"]),
                 "critical_path": [], "critical_path_seconds": 0,
                 "slowest": [] if skip else overview.slowest(conn, run_id),
                 "critical_path_skipped": True, **({"slowest_skipped": True} if skip else {})}


def status(conn: Any, run_id: str, config: Any, every: bool = True, lazy: bool = False
           ) -> dict[str, Any] | None:
    """The object of `status --json` (None for an unknown run): the run, its tasks (see
    :func:`snapshot` for ``every`` and ``lazy``), where its time went and, while it has not
    ended, its warnings (:meth:`qflow.runtime.Runtime.warnings`, read on ``conn``; an ended
    run waits for nothing). ``config``: the :class:`~qflow.config.Config` in use."""
    found = snapshot(conn, run_id, every, lazy)
    if found is None:
        return None
    run, summary = found
    waiting = run.pop("waiting", None)
    ended = run["state"] in TERMINAL
    return {**run, "summary": summary,
            "warnings": [] if ended else warnings(conn, run_id, config, waiting)}


def warnings(conn: Any, run_id: str, config: Any, waiting: Any = None) -> list[str]:
    """Why the run's waiting tasks may never start (see
    :func:`qflow.store.overview.warnings`, and for ``waiting``): never with the embedded
    worker, which serves every queue."""
    if config.embedded:
        return []
    from qflow.store import overview

    return overview.warnings(conn, run_id, config.default_queue, config.worker_lost_timeout,
                             bool(config.security_key), waiting)


def plainly(rt: Runtime, run_id: str, every: bool = True,
            then: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """:func:`status` read without SQLAlchemy (see :func:`_plain`); None also for an
    unknown run. ``then``, if given, is called with it while the connection is open (a
    big run's tasks are read lazily then, as it consumes them) and what it returns is
    returned."""
    def read(conn: plain.PlainConnection) -> Any:
        found = status(conn, run_id, rt.config, every, lazy=then is not None)
        return found if found is None or then is None else then(found)
    return _plain(rt, read)


def runs_plainly(rt: Runtime, *args: Any) -> list[dict[str, Any]] | None:
    """:func:`list_runs` (``args`` after the connection) read without SQLAlchemy, or None
    (see :func:`_plain`)."""
    return _plain(rt, lambda conn: list_runs(conn, *args))


def _plain(rt: Runtime, read: Callable[[plain.PlainConnection], Any]) -> Any:
    """What ``read`` returns on a plain connection, or None where the full path must
    answer: a URL :mod:`qflow.store.plain` does not read, no DB or an empty one, a schema
    that is not current, or any error of the driver. Each of those is rare or slow anyway;
    the full path says what is wrong, as it always did."""
    from qflow.runtime import refuse_private_sqlite

    refuse_private_sqlite(rt.config)
    _ = rt.results               # installed: the readers decode errors with it
    conn = plain.connect(rt.config.database_url)
    if conn is None:
        return None
    from qflow.store.migrate import head

    with conn:
        try:
            if revision(conn) != head():
                return None
            return read(conn)
        except plain.Unavailable:
            return None
