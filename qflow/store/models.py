"""The results DB's tables (SQLAlchemy Core). Times are naive UTC.

Core tables rather than ORM classes: every query is written against ``Table.c``, and
SQLAlchemy's ORM would cost each command (`qflow status`) a large share of its start-up
for nothing. A new column: ``Column("name", Type, nullable=False)`` unless it may be NULL;
a new partial index: ``_partial(lambda: Index(..., **_where("...")))`` (see _PARTIAL).
"""
from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    literal_column,
    text,
)

metadata = MetaData()

# Partial indexes (a WHERE clause, spelt for each dialect) are declared with _partial() and
# built by with_partial_indexes(): SQLAlchemy checks the dialect options of an Index by
# importing that dialect's package, every driver module in it, which cost each command
# (`qflow status` on SQLite loaded all of PostgreSQL's) a good share of its start-up.
# Queries never use Index objects; what compares the schema with the models (the
# migrations' env.py, the migrations-vs-models test) asks for them.
_PARTIAL: list[Callable[[], Index]] = []


def _partial(make: Callable[[], Index]) -> None:
    _PARTIAL.append(make)


def _where(postgresql: str, sqlite: str | None = None) -> dict[str, Any]:
    """An index's WHERE clause for both dialects (``sqlite``: SQLite's spelling, if it
    differs)."""
    return {"postgresql_where": text(postgresql), "sqlite_where": text(sqlite or postgresql)}


def one_of(column, values: tuple[str, ...]) -> ColumnElement[bool]:
    """``column IN ('a', 'b')`` with the values written into the SQL, not bound: a
    prepared statement's generic plan matches a partial index only against literals, and
    SQLite uses a partial index only for a query that repeats its WHERE term as it is.
    For fixed, known names only (states): they are not escaped."""
    return column.in_([literal_column(f"'{value}'") for value in values])


def with_partial_indexes() -> MetaData:
    """The metadata with every index, the partial ones included."""
    while _PARTIAL:
        _PARTIAL.pop(0)()
    return metadata


# One triggered execution of a workflow.
runs = Table(
    "qflow_runs", metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("state", String(20), nullable=False),
    Column("params", Text, default="{}", nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Column("logical_time", DateTime),
    # Set when a backfill re-ran this run's logical time: the id of the run that did.
    Column("superseded_by", String(32)),
    # Counters kept by the completion callback so run state never needs a scan.
    Column("tasks_total", Integer, default=0, nullable=False),
    Column("tasks_left", Integer, default=0, nullable=False),
    Column("tasks_failed", Integer, default=0, nullable=False),
    Column("tasks_canceled", Integer, default=0, nullable=False),
    # Waiting for a free place under the workflow's max_active_runs.
    Column("held", Boolean, default=False, server_default=false(), nullable=False),
    # Created by a process that does not sign messages: workers that require signed
    # messages refuse its tasks' messages, and their reconcilers do not re-send them.
    Column("unsigned", Boolean, default=False, server_default=false(), nullable=False),
    # @workflow(deadline=...): when the run is late if it has not ended (its logical time,
    # or its creation, plus the deadline), and whether run_late was recorded.
    Column("deadline_at", DateTime),
    Column("late", Boolean, default=False, server_default=false(), nullable=False),
    # Bounded dispatch (qflow.store.window): at most ``dispatch_window`` of the run's
    # tasks have a message at a time (NULL: no bound); ``in_flight`` hold a place (sent,
    # or running, until they end), ``backlog`` wait for one without a message.
    Column("dispatch_window", Integer),
    Column("in_flight", Integer, default=0, server_default=text("0"), nullable=False),
    Column("backlog", Integer, default=0, server_default=text("0"), nullable=False),
    # dispatch_window = "auto" (qflow.store.sizing): the run's queues, comma-separated,
    # whose live workers' processes size its window (NULL: a window of a fixed size).
    Column("window_queues", Text),
    Index("ix_qflow_runs_workflow_created", "workflow", "created_at"),
    Index("ix_qflow_runs_state", "state"),
    Index("ix_qflow_runs_created", "created_at"),
    # /qflow/metrics counts runs by (workflow, state) from this index alone; the runs
    # list filtered by both pages through it newest first.
    Index("ix_qflow_runs_workflow_state", "workflow", "state", "created_at"),
    Index("ix_qflow_runs_held", "workflow", "held", "created_at"),
)
# One current run per (workflow, logical time): two schedulers cannot both fire a time.
# Manual runs have no logical time, and NULLs never collide.
_partial(lambda: Index("uq_qflow_runs_workflow_logical", runs.c.workflow,
                      runs.c.logical_time, unique=True,
                      **_where("superseded_by IS NULL")))
_partial(lambda: Index("ix_qflow_runs_deadline", runs.c.deadline_at,
                      **_where("late = false AND deadline_at IS NOT NULL",
                              sqlite="late = 0 AND deadline_at IS NOT NULL")))

# One node of one run, with its latest state and outcome.
tasks = Table(
    "qflow_tasks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # No foreign key to qflow_runs (since 0017): PostgreSQL checked it for every row of a
    # new run, a good share of committing a million of them. Task rows are written only
    # with their run (lifecycle.insert_run, a map's expansion) and deleted with it
    # (retention.delete_batch), which keeps them together.
    Column("run_id", String(32), nullable=False),
    Column("node", String(250), nullable=False),
    Column("task", String(500), nullable=False),
    Column("state", String(20), nullable=False),
    Column("trigger_rule", String(40), default="all_success", nullable=False),
    Column("queue", String(200)),
    Column("call", Text, default="{}", nullable=False),
    Column("options", Text),
    # How the parents have ended so far (see qflow.states.Upstream).
    Column("n_parents", Integer, default=0, nullable=False),
    Column("up_succeeded", Integer, default=0, nullable=False),
    Column("up_failed", Integer, default=0, nullable=False),
    Column("up_skipped", Integer, default=0, nullable=False),
    Column("attempts", Integer, default=0, nullable=False),
    Column("result", Text),
    # With a result store: the object holding the value (JSON: url, size, sha256,
    # serializer, encrypted, hmac); a map's collected list: its elements' values.
    Column("result_ref", Text),
    Column("error", Text),
    Column("worker", String(200)),
    Column("celery_id", String(64)),
    Column("queued_at", DateTime),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    # Released in the DB but its message could not be published (broker down): the
    # reconciler publishes it later.
    Column("unsent", Boolean, default=False, server_default=false(), nullable=False),
    # Concurrency pools this task needs (JSON list) and whether it holds their slots.
    Column("pools", Text),
    Column("holding", Boolean, default=False, server_default=false(), nullable=False),
    # The children's node ids (JSON list; "[]" for none), copied from qflow_edges so that
    # recording an outcome need not look them up. NULL (rows from before 0005): look up.
    Column("children", Text),
    # Bookkeeping, apart from the options the decorator set: how many elements a mapped
    # node expanded into (NULL: not expanded), and the first attempt of the current
    # resume (NULL: 1), from which retries and redeliveries are counted.
    Column("expanded", Integer),
    Column("first_attempt", Integer),
    # @task(deadline=...) in seconds, and whether task_late was recorded.
    Column("deadline_s", Float),
    Column("late", Boolean, default=False, server_default=false(), nullable=False),
    # Queued without a message until its run's dispatch window has room (see
    # qflow.store.window), which the highest ``priority`` (9 first), then the oldest row,
    # takes first.
    Column("held_back", Boolean, default=False, server_default=false(), nullable=False),
    Column("priority", Integer, default=0, server_default=text("0"), nullable=False),
    # Every child of this task runs once all its parents succeeded (all_success, not
    # mapped, no pool slots): its success records itself and releases them in one
    # statement (qflow.store.attempts.finish). Set when the run is written; false for
    # rows from before 0020 and for a map's elements.
    Column("plain_children", Boolean, default=False, server_default=false(), nullable=False),
    UniqueConstraint("run_id", "node", name="uq_qflow_tasks_run_node"),
)

# The tasks that hold a message or a worker, which the sweeper, the reconciler and the
# metrics look for across every run. Partial (since 0017): pending and ended rows, nearly
# all of them (a new run of a million tasks is pending), are never written to it. A
# query meant to use it names OPEN_TASK among its conditions (see one_of).
OPEN_STATES = ("queued", "running", "retrying", "sensing")
OPEN_TASK = one_of(tasks.c.state, OPEN_STATES)
_partial(lambda: Index("ix_qflow_tasks_open", tasks.c.state, **_where(
    "state IN (" + ", ".join(f"'{s}'" for s in OPEN_STATES) + ")")))
# The tasks `qflow status` lists of a run too big to list whole (failed, running and the
# like: qflow.store.overview), in creation order. Partial (0019): a run's bulk of pending,
# queued and succeeded rows is never in it; a task is written to it when it starts
# running, and again only if it fails, retries or senses.
LOOK_STATES = ("failed", "upstream_failed", "retrying", "running", "sensing")
LOOK_TASK = one_of(tasks.c.state, LOOK_STATES)
_partial(lambda: Index("ix_qflow_tasks_look", tasks.c.run_id, tasks.c.id, **_where(
    "state IN (" + ", ".join(f"'{s}'" for s in LOOK_STATES) + ")")))
# Released tasks whose message was not published (the reconciler sends them); the
# condition is written ``unsent = true`` (``unsent = 1`` on SQLite), as the index's is.
_partial(lambda: Index("ix_qflow_tasks_unsent", tasks.c.id,
                      **_where("unsent", sqlite="unsent = 1")))

# The run page's "ended since" query (qflow.store.observe.changed_since); ended rows
# only, so releasing and claiming a task never write to it.
_partial(lambda: Index("ix_qflow_tasks_finished", tasks.c.run_id, tasks.c.finished_at,
                      **_where("finished_at IS NOT NULL")))
# Its second cursor: the tasks queued since (pending -> queued). Queued rows only: a task
# leaves it when a worker claims it.
_partial(lambda: Index("ix_qflow_tasks_queued", tasks.c.run_id, tasks.c.queued_at,
                      **_where("state = 'queued'")))
# A run's held-back tasks in the order its window takes them (highest priority, then
# oldest): each completion that frees a place reads the first of them here, never the
# rest of the run.
_partial(lambda: Index("ix_qflow_tasks_held_back", tasks.c.run_id, tasks.c.priority.desc(),
                      tasks.c.id, **_where("held_back", sqlite="held_back = 1")))

# A dependency: ``child`` waits on ``parent`` within one run.
edges = Table(
    "qflow_edges", metadata,
    # No foreign key to qflow_runs (since 0017), as for the task rows.
    Column("run_id", String(32), primary_key=True),
    Column("parent", String(250), primary_key=True),
    Column("child", String(250), primary_key=True),
    # A task's parents: the claim reads their values through it (attempts._with_run).
    Index("ix_qflow_edges_child", "run_id", "child"),
)

# Every execution attempt of a task instance is a row.
attempts = Table(
    "qflow_attempts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("qflow_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("worker", String(200)),
    Column("celery_id", String(64)),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Column("error_type", String(200)),
    Column("error", Text),
    Column("traceback", Text),
    Column("log", Text),  # what the attempt printed/logged
    UniqueConstraint("task_id", "number", name="uq_qflow_attempts_task_number"),
)

# Per-workflow scheduler state: when a scheduler first saw it, and pauses.
schedules = Table(
    "qflow_schedules", metadata,
    Column("workflow", String(200), primary_key=True),
    Column("paused", Boolean, default=False, nullable=False),
    Column("registered_at", DateTime, nullable=False),
    Column("paused_at", DateTime),
    Column("unpaused_at", DateTime),
)

# A live `qflow worker` process: it heartbeats here; a silent one is presumed dead.
workers = Table(
    "qflow_workers", metadata,
    Column("name", String(200), primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=False),
    Column("queues", Text),  # comma-separated; NULL: unknown
    Column("concurrency", Integer),  # its pool's processes; NULL: unknown
)

# A named concurrency limit shared by every worker and host.
pools = Table(
    "qflow_pools", metadata,
    Column("name", String(200), primary_key=True),
    Column("slots", Integer, nullable=False),
    Column("used", Integer, default=0, nullable=False),
)

# A queued task waiting for a slot of ``pool``; admitted oldest first.
pool_waits = Table(
    "qflow_pool_waits", metadata,
    Column("pool", String(200), primary_key=True),
    Column("task_id", Integer, ForeignKey("qflow_tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("since", DateTime, nullable=False),
    Index("ix_qflow_pool_waits_since", "pool", "since"),
    Index("ix_qflow_pool_waits_task", "task_id"),      # deleting a task row checks it
)

# What a running attempt has printed so far (a container task's, written about once
# a second); its attempt row takes the whole log when it ends.
live_logs = Table(
    "qflow_live_logs", metadata,
    Column("task_id", Integer, ForeignKey("qflow_tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("number", Integer, nullable=False),
    Column("log", Text),
    Column("updated_at", DateTime, nullable=False),
)

# An alert event to deliver to the notifiers (webhook, e-mail): written in the same
# transaction as the state change it reports, delivered after commit by whichever
# process leases it, retried with backoff until ``alert_retry_hours``.
alerts = Table(
    "qflow_alerts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(400), nullable=False),  # idempotency key, sent along
    Column("kind", String(40), nullable=False),
    Column("run_id", String(32), ForeignKey("qflow_runs.id", ondelete="CASCADE"), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("next_at", DateTime, nullable=False),
    Column("tries", Integer, default=0, server_default=text("0"), nullable=False),
    Column("lease_until", DateTime),
    Column("delivered_at", DateTime),
    Column("gave_up_at", DateTime),
    Column("last_error", Text),
    UniqueConstraint("key", name="uq_qflow_alerts_key"),
    Index("ix_qflow_alerts_run", "run_id"),
)
_partial(lambda: Index("ix_qflow_alerts_due", alerts.c.next_at,
                      **_where("delivered_at IS NULL AND gave_up_at IS NULL")))

# One update of an asset: by a task's success (its run and node) or from outside
# (`qflow assets touch`, the API: no run).
asset_events = Table(
    "qflow_asset_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("asset", String(200), nullable=False),
    Column("run_id", String(32)),
    Column("node", String(250)),
    Column("created_at", DateTime, nullable=False),
    Index("ix_qflow_asset_events_asset", "asset", "id"),
    Index("ix_qflow_asset_events_run", "run_id"),      # prune: what a run updated
)

# An update an asset-scheduled workflow's run consumed: each update starts at most
# one run of each workflow (the primary key), however many schedulers look.
asset_consumed = Table(
    "qflow_asset_consumed", metadata,
    Column("workflow", String(200), primary_key=True),
    Column("event_id", Integer, ForeignKey("qflow_asset_events.id", ondelete="CASCADE"),
           primary_key=True),
    # No foreign key: the updates a deleted run consumed stay consumed.
    Column("run_id", String(32), nullable=False),
    Index("ix_qflow_asset_consumed_run", "run_id"),
)

# When an attempt of a sensor began sensing: its timeout counts from then.
sensing = Table(
    "qflow_sensing", metadata,
    Column("task_id", Integer, ForeignKey("qflow_tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("since", DateTime, nullable=False),
    Column("pokes", Integer, default=0, server_default=text("0"), nullable=False),
)

