"""SQLAlchemy 2 models of the results DB. Times are naive UTC."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One triggered execution of a workflow."""

    __tablename__ = "qflow_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20))
    params: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[dt.datetime]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    logical_time: Mapped[dt.datetime | None]
    # Set when a backfill re-ran this run's logical time: the id of the run that did.
    superseded_by: Mapped[str | None] = mapped_column(String(32))
    # Counters kept by the completion callback so run state never needs a scan.
    tasks_total: Mapped[int] = mapped_column(Integer, default=0)
    tasks_left: Mapped[int] = mapped_column(Integer, default=0)
    tasks_failed: Mapped[int] = mapped_column(Integer, default=0)
    tasks_canceled: Mapped[int] = mapped_column(Integer, default=0)
    # Waiting for a free place under the workflow's max_active_runs.
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Created by a process that does not sign messages: workers that require signed
    # messages refuse its tasks' messages, and their reconcilers do not re-send them.
    unsigned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # @workflow(deadline=...): when the run is late if it has not ended (its logical time,
    # or its creation, plus the deadline), and whether run_late was recorded.
    deadline_at: Mapped[dt.datetime | None]
    late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (
        Index("ix_qflow_runs_workflow_created", "workflow", "created_at"),
        Index("ix_qflow_runs_state", "state"),
        Index("ix_qflow_runs_created", "created_at"),
        # One current run per (workflow, logical time): two schedulers cannot both fire a
        # time. Manual runs have no logical time, and NULLs never collide.
        Index("uq_qflow_runs_workflow_logical", "workflow", "logical_time", unique=True,
              sqlite_where=text("superseded_by IS NULL"),
              postgresql_where=text("superseded_by IS NULL")),
        Index("ix_qflow_runs_held", "workflow", "held", "created_at"),
        Index("ix_qflow_runs_deadline", "deadline_at",
              postgresql_where=text("late = false AND deadline_at IS NOT NULL"),
              sqlite_where=text("late = 0 AND deadline_at IS NOT NULL")),
    )


class TaskInstance(Base):
    """One node of one run, with its latest state and outcome."""

    __tablename__ = "qflow_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("qflow_runs.id", ondelete="CASCADE"))
    node: Mapped[str] = mapped_column(String(250))
    task: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(20))
    trigger_rule: Mapped[str] = mapped_column(String(40), default="all_success")
    queue: Mapped[str | None] = mapped_column(String(200))
    call: Mapped[str] = mapped_column(Text, default="{}")
    options: Mapped[str | None] = mapped_column(Text)
    # How the parents have ended so far (see qflow.states.Upstream).
    n_parents: Mapped[int] = mapped_column(Integer, default=0)
    up_succeeded: Mapped[int] = mapped_column(Integer, default=0)
    up_failed: Mapped[int] = mapped_column(Integer, default=0)
    up_skipped: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[str | None] = mapped_column(Text)
    # With a result store: the object holding the value (JSON: url, size, sha256,
    # serializer, encrypted, hmac); a map's collected list: its elements' values.
    result_ref: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    celery_id: Mapped[str | None] = mapped_column(String(64))
    queued_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    # Released in the DB but its message could not be published (broker down): the
    # reconciler publishes it later.
    unsent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Concurrency pools this task needs (JSON list) and whether it holds their slots.
    pools: Mapped[str | None] = mapped_column(Text)
    holding: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The children's node ids (JSON list; "[]" for none), copied from qflow_edges so that
    # recording an outcome need not look them up. NULL (rows from before 0005): look up.
    children: Mapped[str | None] = mapped_column(Text)
    # Bookkeeping, apart from the options the decorator set: how many elements a mapped
    # node expanded into (NULL: not expanded), and the first attempt of the current
    # resume (NULL: 1), from which retries and redeliveries are counted.
    expanded: Mapped[int | None] = mapped_column(Integer)
    first_attempt: Mapped[int | None] = mapped_column(Integer)
    # @task(deadline=...) in seconds, and whether task_late was recorded.
    deadline_s: Mapped[float | None] = mapped_column(Float)
    late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (
        UniqueConstraint("run_id", "node", name="uq_qflow_tasks_run_node"),
        Index("ix_qflow_tasks_unsent", "unsent"),
        Index("ix_qflow_tasks_state", "state"),
        # The run page's "ended since" query (qflow.store.observe.changed_since); ended
        # rows only, so releasing and claiming a task never write to it.
        Index("ix_qflow_tasks_finished", "run_id", "finished_at",
              sqlite_where=text("finished_at IS NOT NULL"),
              postgresql_where=text("finished_at IS NOT NULL")),
    )


class Edge(Base):
    """A dependency: ``child`` waits on ``parent`` within one run."""

    __tablename__ = "qflow_edges"

    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("qflow_runs.id", ondelete="CASCADE"),
                                        primary_key=True)
    parent: Mapped[str] = mapped_column(String(250), primary_key=True)
    child: Mapped[str] = mapped_column(String(250), primary_key=True)

    __table_args__ = (Index("ix_qflow_edges_child", "run_id", "child"),)


class Attempt(Base):
    """Every execution attempt of a task instance is a row."""

    __tablename__ = "qflow_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(Integer, ForeignKey("qflow_tasks.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    worker: Mapped[str | None] = mapped_column(String(200))
    celery_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    error_type: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    log: Mapped[str | None] = mapped_column(Text)        # what the attempt printed/logged

    __table_args__ = (UniqueConstraint("task_id", "number", name="uq_qflow_attempts_task_number"),)


class WorkflowSchedule(Base):
    """Per-workflow scheduler state: when a scheduler first saw it, and pauses."""

    __tablename__ = "qflow_schedules"

    workflow: Mapped[str] = mapped_column(String(200), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    registered_at: Mapped[dt.datetime]
    paused_at: Mapped[dt.datetime | None]
    unpaused_at: Mapped[dt.datetime | None]


class Worker(Base):
    """A live `qflow worker` process: it heartbeats here; a silent one is presumed dead."""

    __tablename__ = "qflow_workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime]
    last_seen: Mapped[dt.datetime]
    queues: Mapped[str | None] = mapped_column(Text)     # comma-separated; NULL: unknown


class Pool(Base):
    """A named concurrency limit shared by every worker and host."""

    __tablename__ = "qflow_pools"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    slots: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, default=0)


class PoolWait(Base):
    """A queued task waiting for a slot of ``pool``; admitted oldest first."""

    __tablename__ = "qflow_pool_waits"

    pool: Mapped[str] = mapped_column(String(200), primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer, ForeignKey("qflow_tasks.id", ondelete="CASCADE"),
                                         primary_key=True)
    since: Mapped[dt.datetime]

    __table_args__ = (Index("ix_qflow_pool_waits_since", "pool", "since"),)


class LiveLog(Base):
    """What a running attempt has printed so far (a container task's, written about once
    a second); its attempt row takes the whole log when it ends."""

    __tablename__ = "qflow_live_logs"

    task_id: Mapped[int] = mapped_column(Integer, ForeignKey("qflow_tasks.id", ondelete="CASCADE"),
                                         primary_key=True)
    number: Mapped[int] = mapped_column(Integer)
    log: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime]


class Alert(Base):
    """An alert event to deliver to the notifiers (webhook, e-mail): written in the same
    transaction as the state change it reports, delivered after commit by whichever
    process leases it, retried with backoff until ``alert_retry_hours``."""

    __tablename__ = "qflow_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(400))          # idempotency key, sent along
    kind: Mapped[str] = mapped_column(String(40))
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("qflow_runs.id",
                                                               ondelete="CASCADE"))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    next_at: Mapped[dt.datetime]
    tries: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    lease_until: Mapped[dt.datetime | None]
    delivered_at: Mapped[dt.datetime | None]
    gave_up_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("key", name="uq_qflow_alerts_key"),
        Index("ix_qflow_alerts_due", "next_at",
              postgresql_where=text("delivered_at IS NULL AND gave_up_at IS NULL"),
              sqlite_where=text("delivered_at IS NULL AND gave_up_at IS NULL")),
        Index("ix_qflow_alerts_run", "run_id"),
    )


class AssetEvent(Base):
    """One update of an asset: by a task's success (its run and node) or from outside
    (`qflow assets touch`, the API: no run)."""

    __tablename__ = "qflow_asset_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(32))
    node: Mapped[str | None] = mapped_column(String(250))
    created_at: Mapped[dt.datetime]

    __table_args__ = (Index("ix_qflow_asset_events_asset", "asset", "id"),)


class AssetConsumed(Base):
    """An update an asset-scheduled workflow's run consumed: each update starts at most
    one run of each workflow (the primary key), however many schedulers look."""

    __tablename__ = "qflow_asset_consumed"

    workflow: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("qflow_asset_events.id", ondelete="CASCADE"), primary_key=True)
    # No foreign key: the updates a deleted run consumed stay consumed.
    run_id: Mapped[str] = mapped_column(String(32))

    __table_args__ = (Index("ix_qflow_asset_consumed_run", "run_id"),)


class Sensing(Base):
    """When an attempt of a sensor began sensing: its timeout counts from then."""

    __tablename__ = "qflow_sensing"

    task_id: Mapped[int] = mapped_column(Integer, ForeignKey("qflow_tasks.id", ondelete="CASCADE"),
                                         primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    since: Mapped[dt.datetime]
    pokes: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


runs = Run.__table__
tasks = TaskInstance.__table__
edges = Edge.__table__
attempts = Attempt.__table__
workers = Worker.__table__
pools = Pool.__table__
pool_waits = PoolWait.__table__
schedules = WorkflowSchedule.__table__
live_logs = LiveLog.__table__
alerts = Alert.__table__
asset_events = AssetEvent.__table__
asset_consumed = AssetConsumed.__table__
sensing = Sensing.__table__
