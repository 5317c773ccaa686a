"""Retention: `qflow db prune` and `retention` delete ended runs older than an age, with
everything of theirs, and never an unfinished run. Real SQLite and PostgreSQL."""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
from pathlib import Path

import flows  # noqa: F401 - registers the workflows
import pytest
from sqlalchemy import func, select, update
from test_store import StubDispatcher, drain, run_of

from qflow.config import Config
from qflow.engine.client import Engine
from qflow.engine.executor import Executor
from qflow.engine.upkeep import Upkeep
from qflow.store import Store
from qflow.store.migrate import ensure_schema, upgrade
from qflow.store.models import attempts, edges, runs, tasks


@pytest.fixture
def engine(db_url, tmp_path):
    store = Store(db_url)
    if store.dialect == "sqlite":
        ensure_schema(store)
    else:
        upgrade(store)
    config = Config(database_url=db_url, result_store=(tmp_path / "objects").as_uri())
    yield Engine(config, store, StubDispatcher())
    store.dispose()


def ended_days_ago(engine: Engine, run_id: str, days: float) -> None:
    when = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(days=days)
    with engine.store.write() as conn:
        conn.execute(update(runs).where(runs.c.id == run_id)
                     .values(created_at=when, finished_at=when))


def rows_of(engine: Engine, run_id: str) -> dict[str, int]:
    with engine.store.read() as conn:
        task_ids = select(tasks.c.id).where(tasks.c.run_id == run_id)
        return {"runs": conn.execute(select(func.count()).where(runs.c.id == run_id)
                                     ).scalar_one(),
                "tasks": conn.execute(select(func.count()).where(tasks.c.run_id == run_id)
                                      ).scalar_one(),
                "edges": conn.execute(select(func.count()).where(edges.c.run_id == run_id)
                                      ).scalar_one(),
                "attempts": conn.execute(select(func.count()).where(
                    attempts.c.task_id.in_(task_ids))).scalar_one()}


def test_prune_deletes_old_ended_runs_with_their_rows_and_objects_only(engine, tmp_path):
    old = engine.trigger("diamond", {"x": 1})
    drain(engine)
    unfinished = engine.trigger("diamond", {"x": 2})          # never run: still queued
    recent = engine.trigger("diamond", {"x": 3})
    engine.dispatcher.sent.clear()
    ended_days_ago(engine, old, 40)
    ended_days_ago(engine, unfinished, 40)
    objects = tmp_path / "objects" / old
    assert objects.is_dir() and any(objects.rglob("*"))       # its stored results
    assert rows_of(engine, old)["attempts"] == 4
    engine.config = dataclasses.replace(engine.config, retention="30d")
    upkeep = Upkeep(Executor(engine))
    assert upkeep.apply_retention() == 1
    assert rows_of(engine, old) == {"runs": 0, "tasks": 0, "edges": 0, "attempts": 0}
    assert not objects.exists()
    for kept in (unfinished, recent):
        assert rows_of(engine, kept)["runs"] == 1 and rows_of(engine, kept)["tasks"] == 4
    assert upkeep.apply_retention() == 0


def test_qflow_db_prune_dry_run_counts_and_a_bad_age_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QFLOW_")}
    example = Path(__file__).resolve().parent.parent / "examples" / "daily_report.py"
    ran = subprocess.run(["qflow", "-A", str(example), "run", "daily_report"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    dry = subprocess.run(["qflow", "db", "prune", "--older-than", "0s", "--dry-run"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert dry.returncode == 0 and dry.stdout.startswith("would delete 1 run(s)")
    kept = subprocess.run(["qflow", "runs", "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert '"daily_report"' in kept.stdout                     # a dry run deletes nothing
    bad = subprocess.run(["qflow", "db", "prune", "--older-than", "3 weeks"], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--older-than" in bad.stderr
    gone = subprocess.run(["qflow", "db", "prune", "--older-than", "0s"], cwd=tmp_path,
                          env=env, capture_output=True, text=True)
    assert gone.returncode == 0 and gone.stdout.startswith("deleted 1 run(s)")


def test_a_bad_retention_setting_is_a_one_line_error_when_the_command_starts(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QFLOW_")}
    bad = subprocess.run(["qflow", "runs"], cwd=tmp_path, capture_output=True, text=True,
                         env={**env, "QFLOW_RETENTION": "30 days"})
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "setting 'retention'" in bad.stderr and "30 days" in bad.stderr


def test_prune_never_touches_a_running_run_nor_an_ended_run_a_running_run_consumed(engine):
    from qflow.store import attempts
    from qflow.store.models import asset_consumed, asset_events
    producer = engine.trigger("diamond", {"x": 1})
    drain(engine)
    running = engine.trigger("diamond", {"x": 2})
    root = engine.dispatcher.sent.pop(0)
    assert engine.store.transact(attempts.claim, root.run_id, root.node, root.attempt,
                                 "w1", None) is not None
    engine.dispatcher.sent.clear()
    assert run_of(engine, running)["state"] == "running"
    for run_id in (producer, running):
        ended_days_ago(engine, run_id, 40)
    with engine.store.write() as conn:               # the running run consumed its update
        event = conn.execute(asset_events.insert().values(
            asset="warehouse.sales", run_id=producer, node="d",
            created_at=dt.datetime(2026, 1, 1))).inserted_primary_key[0]
        conn.execute(asset_consumed.insert().values(workflow="diamond", event_id=event,
                                                    run_id=running))
    before = {r: rows_of(engine, r) for r in (producer, running)}
    engine.config = dataclasses.replace(engine.config, retention="30d")
    upkeep = Upkeep(Executor(engine))
    assert upkeep.apply_retention() == 0
    assert {r: rows_of(engine, r) for r in (producer, running)} == before
    engine.cancel(running)                            # ended: neither is kept any more
    ended_days_ago(engine, running, 40)
    assert upkeep.apply_retention() == 2
    assert rows_of(engine, producer)["runs"] == rows_of(engine, running)["runs"] == 0


def test_a_prune_batch_is_bounded_by_task_rows_not_runs(engine):
    from qflow.store import retention
    old = []
    for x in range(3):
        old.append(engine.trigger("diamond", {"x": x}))      # 4 tasks each
        drain(engine)
        ended_days_ago(engine, old[-1], 40 - x)
    cutoff = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(days=30)
    assert engine.store.transact(retention.delete_batch, cutoff, 1) == [old[0]]
    assert sorted(engine.store.transact(retention.delete_batch, cutoff, 8)) == sorted(old[1:])
    assert engine.store.transact(retention.delete_batch, cutoff, 8) == []
