"""The engine and its queries against real SQLite and real PostgreSQL, no broker.

Messages go to a stub dispatcher and are drained by hand, so every step is deterministic.
"""
from __future__ import annotations

import json
import threading
import time

import flows  # noqa: F401 - registers the workflows
import pytest
import sqlalchemy as sa
from conftest import new_pg_database
from sqlalchemy import func, select

from qflow.config import Config
from qflow.core.records import Dispatch, Outcome
from qflow.core.states import TransitionError
from qflow.engine.client import Engine
from qflow.engine.executor import Executor
from qflow.engine.upkeep import Upkeep
from qflow.errors import UserError
from qflow.store import Store, attempts, bulk, db, read, transitions
from qflow.store.migrate import ensure_schema, upgrade
from qflow.store.models import attempts as attempt_rows
from qflow.store.models import tasks


class StubDispatcher:
    def __init__(self):
        self.sent: list[Dispatch] = []

    def publish(self, items):
        self.sent.extend(items)

    def check(self):
        pass

    def revoke(self, celery_ids):
        self.revoked = list(celery_ids)

    def waiting(self, queue):
        return None


def migrated(db_url: str) -> Store:
    """A store on ``db_url`` with qflow's schema (SQLite creates it on first use)."""
    store = Store(db_url)
    if store.dialect == "sqlite":
        ensure_schema(store)
    else:
        upgrade(store)
    return store


@pytest.fixture
def engine(db_url):
    store = migrated(db_url)
    yield Engine(Config(database_url=db_url), store, StubDispatcher())
    store.dispose()


def drain(engine: Engine) -> list[str]:
    """Execute published messages in order until none is left; return the nodes run."""
    ran = []
    while engine.dispatcher.sent:
        item = engine.dispatcher.sent.pop(0)
        done = Executor(engine).execute(item.run_id, item.node, item.attempt, worker="test")
        if done is not None:
            ran.append(item.node)
    return ran


def run_of(engine: Engine, run_id: str) -> dict:
    with engine.store.read() as conn:
        return read.get_run(conn, run_id)


def task_of(engine: Engine, run_id: str, node: str) -> dict:
    return {t["node"]: t for t in run_of(engine, run_id)["tasks"]}[node]


def test_a_diamond_runs_in_dependency_order_and_succeeds(engine):
    run_id = engine.trigger("diamond", {"x": "5"})
    assert [d.node for d in engine.dispatcher.sent] == ["const"]
    assert run_of(engine, run_id)["state"] == "queued"
    ran = drain(engine)
    assert ran[0] == "const" and ran[-1] == "add__2" and sorted(ran[1:3]) == ["add", "add__1"]
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded" and run["params"] == {"x": 5}
    assert run["started_at"] <= run["finished_at"]
    assert {t["node"]: (t["state"], t["attempts"]) for t in run["tasks"]} == {
        "const": ("succeeded", 1), "add": ("succeeded", 1), "add__1": ("succeeded", 1),
        "add__2": ("succeeded", 1)}
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["add__2"]) == {"add__2": 5 + 10 + 5 + 20}


def test_a_failure_fails_the_run_and_its_downstream_but_not_siblings(engine):
    run_id = engine.trigger("failing")
    drain(engine)
    run = run_of(engine, run_id)
    states = {t["node"]: t["state"] for t in run["tasks"]}
    assert states == {"const": "succeeded", "boom": "failed", "add": "upstream_failed",
                      "add__1": "succeeded"}
    assert run["state"] == "failed"
    boom = next(t for t in run["tasks"] if t["node"] == "boom")
    assert boom["error"] == "ValueError: 1"
    with engine.store.read() as conn:
        row = conn.execute(select(attempt_rows).join(tasks, tasks.c.id == attempt_rows.c.task_id)
                           .where(tasks.c.run_id == run_id, tasks.c.node == "boom")).one()
    assert row.error_type == "ValueError" and "raise ValueError(message)" in row.traceback
    assert row.worker == "test" and row.number == 1 and row.state == "failed"


def test_a_redelivered_message_neither_reruns_nor_releases_twice(engine):
    run_id = engine.trigger("chain", {"length": "1"})
    first = engine.dispatcher.sent.pop(0)
    assert Executor(engine).execute(run_id, first.node, 1) is not None
    assert [d.node for d in engine.dispatcher.sent] == ["add"]
    assert Executor(engine).execute(run_id, first.node, 1) is None          # redelivery
    assert [d.node for d in engine.dispatcher.sent] == ["add"]
    drain(engine)
    assert run_of(engine, run_id)["state"] == "succeeded"


def test_a_stale_outcome_is_refused(engine):
    run_id = engine.trigger("chain", {"length": "1"})
    with engine.store.write() as conn:
        assert attempts.claim(conn, run_id, "const", 1, "w1", None) is not None
    outcome = Outcome("succeeded", result="0")
    with engine.store.write() as conn:
        assert attempts.finish(conn, run_id, "const", 2, outcome) is None  # not its attempt
    with engine.store.write() as conn:
        finished = attempts.finish(conn, run_id, "const", 1, outcome)
        assert [d.node for d in finished.released] == ["add"]
    with engine.store.write() as conn:
        assert attempts.finish(conn, run_id, "const", 1, outcome) is None  # already recorded


def test_a_task_is_marked_plain_only_if_each_child_runs_once_its_parents_succeeded(engine):
    """branching: choose -> big_path, small_path; both -> merge_paths (another trigger
    rule); big_path -> slow -> const. Only slow's one child runs on all_success alone."""
    run_id = engine.trigger("branching", {"value": "5"})
    with engine.store.read() as conn:
        marked = dict(conn.execute(select(tasks.c.node, tasks.c.plain_children)
                                   .where(tasks.c.run_id == run_id)).all())
    # choose is a branch: it skips the child it does not choose, so its outcome does not
    # release them in its own statement (see Claimed.releases), but they are plain
    assert {node for node, plain in marked.items() if plain} == {"choose", "slow"}, marked
    drain(engine)
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded", run


@pytest.mark.parametrize("released_by", ["outcome", "transaction"])
def test_parents_ending_at_the_same_moment_release_the_child_exactly_once(engine,
                                                                          released_by):
    """By their outcomes' own statements (each committed on its own, on PostgreSQL), or
    by the transaction that records each outcome."""
    engine.store.dispose()
    engine.store.pool_size = 40         # each thread keeps its autocommit connection
    for _ in range(3):
        run_id = engine.trigger("fan_in", {"marker": "/dev/null", "width": "24"})
        parents = [d.node for d in engine.dispatcher.sent]
        engine.dispatcher.sent.clear()
        for node in parents:
            with engine.store.write() as conn:
                attempts.claim(conn, run_id, node, 1, "w", None)
        barrier = threading.Barrier(len(parents))
        released: list = []

        def finish(node, barrier=barrier, run_id=run_id, released=released):
            barrier.wait()
            outcome = Outcome("succeeded", result="0")
            if released_by == "outcome":
                out = engine.store.transact(attempts.finish_one, run_id, node, 1, outcome,
                                            False, ("record",), True)
            else:
                out = engine.store.transact(attempts.finish, run_id, node, 1, outcome)
            released.extend(out.released)

        threads = [threading.Thread(target=finish, args=(n,)) for n in parents]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [d.node for d in released] == ["record"]
        with engine.store.read() as conn:
            row = conn.execute(select(tasks.c.state, tasks.c.up_succeeded).where(
                tasks.c.run_id == run_id, tasks.c.node == "record")).one()
        assert tuple(row) == ("queued", 24)


def test_state_writes_outside_the_transition_table_are_refused(engine):
    run_id = engine.trigger("chain", {"length": "1"})
    with pytest.raises(TransitionError):
        with engine.store.write() as conn:
            transitions.set_task_state(conn, run_id, "add", "running", expect=("pending",))


def test_return_values_that_cannot_be_stored_fail_the_task_clearly(engine):
    run_id = engine.trigger("bad_output")
    drain(engine)
    errors = {t["node"]: t["error"] for t in run_of(engine, run_id)["tasks"]}
    assert errors["not_json"].startswith("return value is not JSON-serialisable: Object of "
                                         "type set")
    assert errors["big"] == ("return value is 2000002 bytes, larger than result_max_bytes "
                             "(1048576); set result_store to keep values of any size")


def test_tasks_read_their_run_context(engine):
    run_id = engine.trigger("ordered")
    assert [d.node for d in engine.dispatcher.sent] == ["where"]
    drain(engine)
    with engine.store.read() as conn:
        got = read.results(conn, run_id, ["where", "where__1"])
    assert got["where"]["run_id"] == run_id and got["where__1"]["node"] == "where__1"
    assert got["where"]["attempt"] == 1


def test_expansion_commits_every_row_in_one_transaction(engine):
    run_id = engine.trigger("fan", {"width": "200"})
    run = run_of(engine, run_id)
    assert run["tasks_total"] == 401 and len(run["tasks"]) == 401
    assert sum(t["state"] == "queued" for t in run["tasks"]) == 200
    with engine.store.read() as conn:
        call = json.loads(conn.execute(select(tasks.c.call).where(
            tasks.c.run_id == run_id, tasks.c.node == "join")).scalar())
    assert len(call["args"][0]) == 200


def test_postgresql_without_migration_asks_for_db_upgrade(pg_server_url):
    from conftest import new_pg_database
    store = Store(new_pg_database(pg_server_url))
    with pytest.raises(UserError, match=r"the results DB is empty: run `qflow db upgrade`"):
        ensure_schema(store)
    upgrade(store)
    ensure_schema(store)
    store.dispose()


def test_resume_from_a_node_reruns_it_and_its_downstream_only(engine):
    from qflow.store import control
    run_id = engine.trigger("diamond", {"x": "1"})
    drain(engine)
    with pytest.raises(UserError, match="use --from NODE"):
        engine.resume(run_id)
    assert engine.resume(run_id, "add") == 1
    assert [d.attempt for d in engine.dispatcher.sent] == [2]
    assert drain(engine) == ["add", "add__2"]
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded"
    assert {t["node"]: t["attempts"] for t in run["tasks"]} == {
        "const": 1, "add": 2, "add__1": 1, "add__2": 2}
    with pytest.raises(UserError, match="has no node 'nope'"):
        engine.store.transact(control.resume_run, run_id, "nope")


def test_resume_from_a_node_its_kept_parents_skip_ends_it_at_once(engine, registry):
    """`retry --from` a task whose kept parent was skipped: its trigger rule settles it
    at once (skipped), instead of leaving it pending and the run running for ever."""
    @registry.task.branch
    def pick() -> str:
        return "taken"

    @registry.task
    def taken() -> int:
        return 1

    @registry.task
    def passed_over() -> int:
        return 2

    @registry.task
    def after(value: int) -> int:
        return value

    @registry.workflow
    def forked():
        p, other = pick(), passed_over()
        p >> taken()
        p >> other
        after(other)

    run_id = engine.trigger("forked")
    drain(engine)
    states = {t["node"]: t["state"] for t in run_of(engine, run_id)["tasks"]}
    assert states["passed_over"] == states["after"] == "skipped"
    assert engine.resume(run_id, "after") == 0
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded"
    assert {t["node"]: t["state"] for t in run["tasks"]}["after"] == "skipped"


def test_cancel_ends_every_unfinished_task_and_a_late_report_is_refused(engine):
    run_id = engine.trigger("chain", {"length": "2"})
    first = engine.dispatcher.sent.pop(0)
    with engine.store.write() as conn:
        attempts.claim(conn, run_id, first.node, 1, "w1", "celery-id-1")
    assert engine.cancel(run_id) == "canceled"
    assert engine.dispatcher.revoked == ["celery-id-1"]
    run = run_of(engine, run_id)
    assert run["state"] == "canceled"
    assert {t["state"] for t in run["tasks"]} == {"canceled"}
    with engine.store.write() as conn:
        assert attempts.finish(conn, run_id, first.node, 1, Outcome("succeeded", "0")) is None
    with pytest.raises(UserError, match="already ended"):
        engine.cancel(run_id)
    assert engine.resume(run_id) == 1
    drain(engine)
    assert run_of(engine, run_id)["state"] == "succeeded"


def test_the_migrations_create_exactly_the_models(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from qflow.store.models import with_partial_indexes
    store = Store(db_url)
    upgrade(store)
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn),
                                with_partial_indexes()) == []
    store.dispose()


def results_of(engine, run_id, nodes):
    with engine.store.read() as conn:
        return read.results(conn, run_id, nodes)


def test_a_map_runs_one_task_per_element_and_its_child_gets_the_results_in_order(engine):
    run_id = engine.trigger("mapped", {"n": "6", "factor": "10"})
    drain(engine)
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded"
    nodes = [t["node"] for t in run["tasks"]]
    assert [n for n in nodes if n.startswith("scale[")] == [f"scale[{i}]" for i in range(6)]
    assert run["tasks_total"] == len(nodes) == 4 + 6
    got = results_of(engine, run_id, ["scale", "total_of", "scale[5]"])
    assert got["scale"] == [i * 10 + 1 for i in range(6)]
    assert got["scale[5]"] == 51 and got["total_of"] == sum(i * 10 + 1 for i in range(6))


def test_an_empty_map_gives_an_empty_list_and_downstream_still_runs(engine):
    run_id = engine.trigger("mapped", {"n": "0"})
    drain(engine)
    assert run_of(engine, run_id)["state"] == "succeeded"
    assert results_of(engine, run_id, ["scale", "total_of"]) == {"scale": [], "total_of": 0}


def test_maps_over_parameters_and_literal_lists_expand_at_once(engine):
    run_id = engine.trigger("mapped_params", {"values": "[4, 5]"})
    assert sorted(d.node for d in engine.dispatcher.sent) == [
        "scale[0]", "scale[1]", "scale__1[0]", "scale__1[1]"]
    drain(engine)
    assert results_of(engine, run_id, ["join", "join__1"]) == {"join": [8, 10],
                                                               "join__1": [21, 24]}


def test_a_failed_element_fails_the_map_and_a_retry_reruns_only_that_element(engine):
    run_id = engine.trigger("mapped", {"n": "5", "fail_on": "3"})
    drain(engine)
    run = run_of(engine, run_id)
    states = {t["node"]: t["state"] for t in run["tasks"]}
    assert run["state"] == "failed" and states["scale[3]"] == "failed"
    assert states["scale"] == "failed" and states["total_of"] == "upstream_failed"
    error = next(t["error"] for t in run["tasks"] if t["node"] == "scale")
    assert error == "MapError: 1 of 5 elements failed (scale[3])"
    with engine.store.write() as conn:      # "fix" the element: it no longer fails
        conn.execute(tasks.update().where(tasks.c.run_id == run_id,
                                          tasks.c.node == "scale[3]")
                     .values(call=json.dumps({"args": [3, 10], "kwargs": {"offset": {
                         "__qflow_ref__": "const"}}})))
    assert engine.resume(run_id) == 1
    assert drain(engine) == ["scale[3]", "total_of"]      # not the other elements
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded"
    assert {t["node"]: t["attempts"] for t in run["tasks"]}["scale[0]"] == 1
    assert results_of(engine, run_id, ["total_of"])["total_of"] == sum(
        i * 10 + 1 for i in range(5))


def test_a_map_wider_than_max_map_size_fails_that_node_clearly(engine):
    engine.config = Config(database_url=engine.config.database_url, max_map_size=3)
    run_id = engine.trigger("mapped", {"n": "4"})
    drain(engine)
    run = run_of(engine, run_id)
    error = next(t["error"] for t in run["tasks"] if t["node"] == "scale")
    assert error == "MapError: scale.map() over 4 items exceeds max_map_size (3)"
    assert run["state"] == "failed"


def test_rerunning_a_map_s_input_expands_it_again(engine):
    run_id = engine.trigger("mapped", {"n": "3"})
    drain(engine)
    with engine.store.write() as conn:      # the input now yields 4 items
        conn.execute(tasks.update().where(tasks.c.run_id == run_id, tasks.c.node == "numbers")
                     .values(call=json.dumps({"args": [4], "kwargs": {}})))
    engine.resume(run_id, "numbers")
    drain(engine)
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded"
    assert sorted(t["node"] for t in run["tasks"] if t["node"].startswith("scale[")) == [
        f"scale[{i}]" for i in range(4)]
    assert results_of(engine, run_id, ["scale"])["scale"] == [1, 11, 21, 31]
    assert run["tasks_total"] == 4 + 4


def test_a_pool_lets_only_its_slots_run_and_each_end_admits_the_next(engine):
    engine.config = Config(database_url=engine.config.database_url, pools="warehouse=2")
    run_id = engine.trigger("pooled", {"n": "5", "seconds": "0"})
    assert len(engine.dispatcher.sent) == 2             # three wait, without a message
    with engine.store.read() as conn:
        from qflow.store.pools import listing
        assert listing(conn) == [{"name": "warehouse", "slots": 2, "used": 2, "waiting": 3}]
    first = engine.dispatcher.sent.pop(0)
    Executor(engine).execute(first.run_id, first.node, 1)
    assert len(engine.dispatcher.sent) == 2             # one ended, one admitted
    drain(engine)
    assert run_of(engine, run_id)["state"] == "succeeded"
    with engine.store.read() as conn:
        assert listing(conn)[0]["used"] == 0


def test_resizing_a_pool_admits_waiting_tasks(engine):
    engine.config = Config(database_url=engine.config.database_url, pools="warehouse=1")
    engine.trigger("pooled", {"n": "4", "seconds": "0"})
    assert len(engine.dispatcher.sent) == 1
    assert engine.set_pool("warehouse", 3) == 2
    assert len(engine.dispatcher.sent) == 3


def test_canceling_a_run_gives_its_slots_to_another_run(engine):
    engine.config = Config(database_url=engine.config.database_url, pools="warehouse=2")
    first = engine.trigger("pooled", {"n": "2", "seconds": "0"})
    second = engine.trigger("pooled", {"n": "2", "seconds": "0"})
    assert {d.run_id for d in engine.dispatcher.sent} == {first}
    engine.dispatcher.sent.clear()
    engine.cancel(first)
    assert sorted(d.run_id for d in engine.dispatcher.sent) == [second, second]
    drain(engine)
    assert run_of(engine, second)["state"] == "succeeded"


def test_a_task_naming_an_unknown_pool_is_refused_before_anything_runs(engine):
    with pytest.raises(UserError, match=r"unknown pool 'warehouse': give it slots with "
                                        r"`qflow pools set warehouse N`"):
        engine.trigger("pooled", {"n": "2"})
    assert engine.dispatcher.sent == []


def test_max_active_tasks_caps_a_workflow_s_running_tasks(engine):
    engine.trigger("two_at_a_time", {"n": "5", "seconds": "0"})
    assert len(engine.dispatcher.sent) == 2
    drain(engine)


def test_max_active_runs_holds_extra_runs_until_one_ends(engine):
    first = engine.trigger("one_at_a_time", {"seconds": "0"})
    second = engine.trigger("one_at_a_time", {"seconds": "0"})
    assert [d.run_id for d in engine.dispatcher.sent] == [first]
    assert run_of(engine, second)["state"] == "queued"
    item = engine.dispatcher.sent.pop(0)
    Executor(engine).execute(item.run_id, item.node, 1)
    assert run_of(engine, first)["state"] == "succeeded"
    assert [d.run_id for d in engine.dispatcher.sent] == [second]
    drain(engine)
    assert run_of(engine, second)["state"] == "succeeded"


def test_a_workflow_s_params_option_applies_to_every_run(registry):
    from qflow import task, workflow

    @task
    def echo(value: str) -> str:
        return value

    @workflow(params={"region": "eu"})
    def regional(region: str = "us", day: str = "d"):
        echo(region)

    assert regional.resolve_params() == {"region": "eu", "day": "d"}
    assert regional.resolve_params({"region": "apac"})["region"] == "apac"


def test_an_aware_logical_time_is_stored_as_utc_and_tasks_see_it_aware(engine):
    import datetime as dt
    paris = dt.timezone(dt.timedelta(hours=1))
    run_id = engine.trigger("ordered", logical_time=dt.datetime(2026, 3, 1, 18, 0,
                                                                tzinfo=paris))
    with engine.store.read() as conn:
        assert read.get_run(conn, run_id, with_tasks=False)["logical_time"] == \
            "2026-03-01T17:00:00+00:00"


def test_a_run_whose_count_was_lost_is_ended_by_the_maintenance_step(engine):
    import datetime as dt

    from qflow.store.models import runs
    run_id = engine.trigger("diamond")
    drain(engine)
    with engine.store.write() as conn:      # as if the counting transaction was lost
        conn.execute(runs.update().where(runs.c.id == run_id).values(
            state="running", finished_at=None, tasks_left=1,
            created_at=dt.datetime(2026, 1, 1)))
    assert Upkeep(Executor(engine)).finish_stuck_runs() == 1
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded" and run["tasks_done"] == run["tasks_total"]
    assert Upkeep(Executor(engine)).finish_stuck_runs() == 0


def test_a_run_whose_end_was_counted_but_not_recorded_is_ended_by_the_maintenance_step(
        engine):
    import datetime as dt

    from qflow.store.models import runs
    run_id = engine.trigger("diamond")
    drain(engine)
    with engine.store.write() as conn:      # the count reached 0; the crash came before
        conn.execute(runs.update().where(runs.c.id == run_id).values(   # the state write
            state="running", finished_at=None, created_at=dt.datetime(2026, 1, 1)))
    assert Upkeep(Executor(engine)).finish_stuck_runs() == 1
    assert run_of(engine, run_id)["state"] == "succeeded"


def attempt_count(engine, run_id, node) -> int:
    with engine.store.read() as conn:
        return len(conn.execute(
            select(attempt_rows.c.id).join(tasks, tasks.c.id == attempt_rows.c.task_id)
            .where(tasks.c.run_id == run_id, tasks.c.node == node)).all())


def test_a_long_error_is_stored_whole_once_and_its_start_on_the_task(engine, registry):
    """The attempt's row keeps the whole error (to error_max_bytes); the task's row, which
    status, the API and alerts read, keeps its first 2 KiB: a long message is not
    stored twice."""
    @registry.task
    def wordy():
        raise ValueError("why " * 3000)

    @registry.workflow
    def verbose():
        wordy()

    run_id = engine.trigger("verbose")
    drain(engine)
    whole = "ValueError: " + "why " * 3000
    with engine.store.read() as conn:
        stored = conn.execute(
            select(attempt_rows.c.error).join(tasks, tasks.c.id == attempt_rows.c.task_id)
            .where(tasks.c.run_id == run_id)).scalar_one()
    assert stored == whole
    task = run_of(engine, run_id)["tasks"][0]
    assert task["error"] == whole[:2048] + f" … (truncated, {len(whole)} bytes)"


def test_a_leaf_s_outcome_is_one_autocommitted_write_and_a_stale_one_writes_nothing(engine):
    run_id = engine.trigger("chain", {"length": "1"})
    first = engine.dispatcher.sent.pop(0)
    Executor(engine).execute(run_id, first.node, 1)
    claimed = engine.store.transact(attempts.claim, run_id, "add", 1, "w1", None)
    assert claimed.alone                      # no children, no pools
    outcome = Outcome("succeeded", result="1")
    assert attempts.finishes_alone(claimed, outcome, fail_fast=False)
    for stale in (2, 0):
        assert engine.store.transact(attempts.finish_one, run_id, "add", stale, outcome) is None
    assert attempt_count(engine, run_id, "add") == 0
    finished = engine.store.transact(attempts.finish_one, run_id, "add", 1, outcome)
    assert finished.released == [] and finished.totals == (0, 0)     # the run's last task
    redelivered = engine.store.transact(attempts.finish_one, run_id, "add", 1, outcome)
    assert redelivered is None
    assert attempt_count(engine, run_id, "add") == 1


def test_runs_recorded_before_tasks_listed_their_children_still_release_them(engine):
    run_id = engine.trigger("diamond", {"x": "5"})
    with engine.store.write() as conn:      # rows as migration 0005 leaves older runs
        conn.execute(tasks.update().where(tasks.c.run_id == run_id).values(children=None))
    ran = drain(engine)
    assert ran[0] == "const" and ran[-1] == "add__2"
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["add__2"]) == {"add__2": 5 + 10 + 5 + 20}
    assert run_of(engine, run_id)["state"] == "succeeded"


@pytest.mark.parametrize("listed", [True, False])
def test_a_branch_picks_among_its_children_listed_on_its_row_or_in_the_edges(engine, listed):
    run_id = engine.trigger("branching", {"value": "50"})
    if not listed:                          # as migration 0005 leaves older runs
        with engine.store.write() as conn:
            conn.execute(tasks.update().where(tasks.c.run_id == run_id).values(children=None))
    drain(engine)
    got = {t["node"]: t["state"] for t in run_of(engine, run_id)["tasks"]}
    assert got["choose"] == "succeeded" and got["big_path"] == "succeeded"
    assert got["small_path"] == "skipped"
    assert run_of(engine, run_id)["state"] == "succeeded"


def test_rows_written_in_bulk_keep_tabs_newlines_backslashes_and_unicode(engine, registry):
    from qflow import task, workflow

    @task
    def echo(value: str) -> str:
        return value

    @workflow
    def awkward(text: str):
        echo(text)
        echo("literal\t\\N\r\n\"quoted\" ünïcødé")

    text = "a\tb\nc\\d \\N NULL ' \" \x01 ✓"
    run_id = engine.trigger("awkward", {"text": text})
    drain(engine)
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["echo", "echo__1"]) == {
            "echo": text, "echo__1": "literal\t\\N\r\n\"quoted\" ünïcødé"}
    assert run_of(engine, run_id)["params"] == {"text": text}


def test_a_task_gets_the_values_its_call_takes_even_beside_a_nan_literal(engine, registry):
    from qflow import task, workflow

    @task
    def make(x: int) -> int:
        return x

    @task
    def combine(a: int, b: int, odd: float, nested: dict) -> list:
        return [a, b, odd != odd, nested]          # NaN is the one float unequal to itself

    @workflow
    def takes():
        first, second, later = make(1), make(2), make(3)
        combine(first, b=second, odd=float("nan"), nested={"k": [first]}) << later

    run_id = engine.trigger("takes")
    drain(engine)
    assert run_of(engine, run_id)["state"] == "succeeded"
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["combine"]) == {
            "combine": [1, 2, True, {"k": [1]}]}


def test_a_claim_whose_answer_was_lost_is_still_this_worker_s_when_retried(engine):
    from sqlalchemy.exc import OperationalError
    store = Store(engine.store.url, retry_seconds=5)        # as in a worker: it retries
    run_id = engine.trigger("chain", {"length": "1"})
    first_try = []

    def claim_then_lose_the_answer(conn, *args):
        claimed = attempts.claim(conn, *args)       # on PostgreSQL this commits at once
        if not first_try:
            first_try.append(claimed)
            raise OperationalError("UPDATE qflow_tasks …", {}, OSError(
                "disk I/O error: server closed the connection unexpectedly"))
        return claimed

    try:
        claimed = store.transact(claim_then_lose_the_answer, run_id, "const", 1, "w1", "c1")
        assert first_try[0] is not None and claimed is not None and claimed.task == "flows.const"
        for worker, celery_id in (("w2", "c1"), ("w1", "c2")):    # not this worker's message
            assert store.transact(attempts.claim_in_doubt, run_id, "const", 1, worker,
                                  celery_id) is None
        assert store.transact(attempts.finish, run_id, "const", 1,
                              Outcome("succeeded", result="0")) is not None
        assert attempt_count(engine, run_id, "const") == 1
    finally:
        store.dispose()


def test_a_worker_s_kept_connection_commits_each_claim_and_survives_the_server_dropping_it(
        engine):
    from sqlalchemy import text
    store = Store(engine.store.url, retry_seconds=5)        # as in a worker: it retries
    run_id = engine.trigger("fan", {"width": "3"})
    roots = [d.node for d in engine.dispatcher.sent]

    def claim(node):
        return store.transact(attempts.claim, run_id, node, 1, "w1", f"c-{node}")

    def state_seen_elsewhere(node):               # a fresh connection of another store
        with engine.store.read() as conn:
            return conn.execute(select(tasks.c.state).where(
                tasks.c.run_id == run_id, tasks.c.node == node)).scalar_one()

    try:
        assert claim(roots[0]) is not None
        assert state_seen_elsewhere(roots[0]) == "running"       # committed, not pending
        if store.dialect == "postgresql":        # the server ends every other session
            with engine.store.write() as conn:
                killed = conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
            assert killed >= 1
        assert claim(roots[1]) is not None
        assert state_seen_elsewhere(roots[1]) == "running"
        assert store.transact(attempts.finish, run_id, roots[1], 1, Outcome(
            "succeeded", result="1")) is not None
        assert attempt_count(engine, run_id, roots[1]) == 1
    finally:
        store.dispose()


def celery_ids(engine, run_id) -> dict[str, str]:
    return {t["node"]: t["celery_id"] for t in run_of(engine, run_id)["tasks"]}


def test_a_worker_following_a_chain_runs_each_released_child_itself(engine):
    from qflow.engine.dispatch import Follow
    run_id = engine.trigger("chain", {"length": "3"})
    first = engine.dispatcher.sent.pop(0)
    follow = Follow("default", time.monotonic() + 60)
    outcome = Executor(engine).execute(run_id, first.node, 1, "w1", "msg-1", follow=follow)
    assert outcome.state == "succeeded"
    assert engine.dispatcher.sent == []                  # no message for the next hops
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded"
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["add__2"]) == {"add__2": 3}
    assert set(celery_ids(engine, run_id).values()) == {"msg-1"}


@pytest.mark.parametrize("follow", ["other queue", "deadline passed", "off"])
def test_a_child_is_published_when_the_worker_may_not_follow(engine, follow):
    from qflow.engine.dispatch import Follow
    run_id = engine.trigger("chain", {"length": "2"})
    first = engine.dispatcher.sent.pop(0)
    given = {"other queue": Follow("etl", time.monotonic() + 60),
             "deadline passed": Follow("default", time.monotonic() - 1),
             "off": None}[follow]
    Executor(engine).execute(run_id, first.node, 1, "w1", "msg-1", follow=given)
    assert [d.node for d in engine.dispatcher.sent] == ["add"]
    assert run_of(engine, run_id)["state"] == "running"


def test_a_child_with_a_timeout_or_a_countdown_goes_through_the_broker(engine, registry):
    from qflow import task, workflow
    from qflow.engine.dispatch import Follow

    @task
    def first() -> int:
        return 1

    @task(timeout=30)
    def limited(x: int) -> int:
        return x

    @workflow
    def guarded():
        limited(first())

    run_id = engine.trigger("guarded")
    root = engine.dispatcher.sent.pop(0)
    Executor(engine).execute(run_id, root.node, 1, "w1", "msg-1",
                   follow=Follow("default", time.monotonic() + 60))
    assert [d.node for d in engine.dispatcher.sent] == ["limited"]   # Celery's hard limit


def test_a_process_lost_while_running_a_followed_child_records_that_child(engine):
    from qflow.errors import WorkerLost
    run_id = engine.trigger("chain", {"length": "2"})
    engine.dispatcher.sent.clear()
    # The message for "const" ran it, then its process claimed the released "add" under
    # the same message and died there.
    engine.store.transact(attempts.claim, run_id, "const", 1, "w1", "msg-1")
    engine.store.transact(attempts.finish, run_id, "const", 1, Outcome("succeeded", result="0"))
    assert engine.store.transact(attempts.claim, run_id, "add", 1, "w1", "msg-1") is not None
    Executor(engine).record_lost_message("msg-1", (run_id, "const", 1), WorkerLost("process died"))
    assert [(d.node, d.attempt) for d in engine.dispatcher.sent] == [("add", 2)]
    tasks_ = {t["node"]: t for t in run_of(engine, run_id)["tasks"]}
    assert tasks_["add"]["state"] == "retrying" and tasks_["const"]["state"] == "succeeded"
    assert drain(engine) == ["add", "add__1"]
    assert run_of(engine, run_id)["state"] == "succeeded"


@pytest.mark.parametrize("settings, timelimit, events, follows", [
    ({}, None, False, True),
    ({}, (35.0, None), False, False),           # Celery's hard limit is per message
    ({"follow_seconds": 0}, None, False, False),
    ({}, None, True, True),                     # and reports each task's events
])
def test_a_worker_follows_unless_limited_or_turned_off(settings, timelimit, events, follows):
    from types import SimpleNamespace

    from qflow.broker.app import TASK_EVENTS_ON, _follow, make_celery
    request = SimpleNamespace(delivery_info={"routing_key": "etl"}, timelimit=timelimit,
                              hostname="w1@h",
                              **({TASK_EVENTS_ON: True} if events else {}))
    config = Config(broker_url="redis://x", **settings)
    got = _follow(request, config, app=make_celery(config, lambda: None))
    assert (got is not None) == follows
    if follows:
        assert got.queue == "etl" and got.deadline > time.monotonic()
        assert (got.report is not None) == events


# -- lists longer than one statement takes --------------------------------------------------
def test_a_task_with_more_children_than_a_statement_takes_releases_every_one(engine,
                                                                              registry):
    """PostgreSQL takes 65,535 bind parameters a statement: the release of a task's
    children, one name each, went over that and failed for ever (SQLite as built here
    takes 250,000; the split into statements is checked on it with a small chunk below)."""
    n = 66_000 if engine.store.dialect == "postgresql" else 2_000
    run_id = engine.trigger(one_parent_of_many(registry).name, {"n": n})
    assert drain_one(engine) == "first"
    with engine.store.read() as conn:
        states = dict(conn.execute(select(tasks.c.state, func.count()).where(
            tasks.c.run_id == run_id).group_by(tasks.c.state)).all())
    assert states == {"succeeded": 1, "queued": n}
    assert engine.dispatcher.sent                      # the first of them are published


def test_maps_and_children_split_into_several_statements_keep_order_and_errors(
        engine, registry, monkeypatch):
    monkeypatch.setattr(bulk, "IN_CHUNK", 3)          # a statement takes 3 names here
    registry.WORKFLOWS["mapped"] = flows.mapped
    run_id = engine.trigger("mapped", {"n": "10"})
    drain(engine)
    assert results_of(engine, run_id, ["scale", "total_of"]) == {
        "scale": [i * 10 + 1 for i in range(10)], "total_of": sum(i * 10 + 1 for i in range(10))}
    failing = engine.trigger("mapped", {"n": "10", "fail_on": "7"})
    drain(engine)
    error = next(t["error"] for t in run_of(engine, failing)["tasks"] if t["node"] == "scale")
    assert error == "MapError: 1 of 10 elements failed (scale[7])"
    run_id = engine.trigger(one_parent_of_many(registry).name, {"n": 7})
    assert len(drain(engine)) == 8 and run_of(engine, run_id)["state"] == "succeeded"


def one_parent_of_many(registry):
    """A workflow whose first task is the parent of ``n`` others."""
    @registry.task
    def first() -> int:
        return 0

    @registry.task
    def then(i: int) -> int:
        return i

    @registry.workflow
    def very_wide(n: int):
        root = first()
        for i in range(n):
            root >> then(i)

    return very_wide


def drain_one(engine: Engine) -> str:
    item = engine.dispatcher.sent.pop(0)
    Executor(engine).execute(item.run_id, item.node, item.attempt, worker="test")
    return item.node


@pytest.fixture
def pg_engine(pg_server_url):
    store = migrated(new_pg_database(pg_server_url))
    yield Engine(Config(database_url=store.url), store, StubDispatcher())
    store.dispose()


def statements_of(store: Store, fn, *args) -> tuple[object, list[str], int]:
    """``fn(*args)``'s answer, the statements the store sent meanwhile and how many
    transactions it committed (not counting statements committed on their own)."""
    seen: list[str] = []
    commits = []

    def record(conn, cursor, statement, *_):
        seen.append(" ".join(statement.split())[:40])

    def committed(conn):
        commits.append(conn)

    engines = [store._engine_for(durable, autocommit) for durable in (True, False)
               for autocommit in (True, False)]
    for eng in engines:
        sa.event.listen(eng, "before_cursor_execute", record)
        sa.event.listen(eng, "commit", committed)
    try:
        return fn(*args), seen, len(commits)
    finally:
        for eng in engines:
            sa.event.remove(eng, "before_cursor_execute", record)
            sa.event.remove(eng, "commit", committed)


def test_a_success_records_itself_and_releases_its_children_in_one_statement(pg_engine):
    """A small run (fewer tasks than any window it could have) of plain children: each
    task is its claim and its outcome, each one statement committed on its own."""
    engine = pg_engine
    run_id = engine.trigger("diamond", {"x": "1"})
    executor = Executor(engine)
    const = engine.dispatcher.sent.pop(0)
    _, seen, commits = statements_of(engine.store, executor.execute, run_id, const.node, 1,
                                     "w")
    # claim; then the outcome, counted in the run and in both children, which it queues
    assert [s.split()[0] for s in seen] == ["WITH", "WITH"] and commits == 0, seen
    assert sorted(d.node for d in engine.dispatcher.sent) == ["add", "add__1"]
    first, second = engine.dispatcher.sent
    engine.dispatcher.sent.clear()
    _, seen, commits = statements_of(engine.store, executor.execute, run_id, first.node, 1,
                                     "w")
    assert (len(seen), commits) == (2, 0)        # its child waits for the other parent
    assert engine.dispatcher.sent == [] and task_of(engine, run_id, "add__2")["state"] == \
        "pending"
    _, seen, commits = statements_of(engine.store, executor.execute, run_id, second.node, 1,
                                     "w")
    assert (len(seen), commits) == (2, 0) and [d.node for d in engine.dispatcher.sent] == [
        "add__2"]
    last = engine.dispatcher.sent.pop()
    assert task_of(engine, run_id, "add__2")["state"] == "queued"
    _, seen, commits = statements_of(engine.store, executor.execute, run_id, last.node, 1,
                                     "w")
    # claim, outcome, the run's end: each a statement committed on its own
    assert (len(seen), commits) == (3, 0), seen
    assert seen[-1].startswith("UPDATE qflow_runs SET state=")
    run = run_of(engine, run_id)
    assert run["state"] == "succeeded" and run["tasks_done"] == 4
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["add__2"]) == {"add__2": 1 + 10 + 1 + 20}


def test_in_a_run_with_a_window_an_outcome_counts_its_children_then_releases_them(
        pg_server_url):
    """A run that has a window (two places for four tasks) counts the places its tasks
    take: a release is a statement of its own, in the outcome's transaction."""
    store = migrated(new_pg_database(pg_server_url))
    engine = Engine(Config(database_url=store.url, dispatch_window=2), store,
                    StubDispatcher())
    try:
        run_id = engine.trigger("diamond", {"x": "1"})
        executor = Executor(engine)
        const = engine.dispatcher.sent.pop(0)
        _, seen, commits = statements_of(engine.store, executor.execute, run_id, const.node,
                                         1, "w")
        # claim; the outcome, counted in the run and in both children; their release
        assert [s.split()[0] for s in seen] == ["WITH", "WITH", "WITH"] and commits == 1, seen
        first, second = engine.dispatcher.sent
        engine.dispatcher.sent.clear()
        _, seen, commits = statements_of(engine.store, executor.execute, run_id, first.node,
                                         1, "w")
        assert (len(seen), commits) == (2, 1) and engine.dispatcher.sent == []
        _, seen, commits = statements_of(engine.store, executor.execute, run_id,
                                         second.node, 1, "w")
        assert (len(seen), commits) == (3, 1) and [
            d.node for d in engine.dispatcher.sent] == ["add__2"]
        assert drain(engine) == ["add__2"]
        assert run_of(engine, run_id)["state"] == "succeeded"
    finally:
        store.dispose()


def test_a_task_with_more_children_than_its_outcome_counts_still_releases_them(
        pg_engine, monkeypatch):
    monkeypatch.setattr(attempts, "FOLDED", 1)
    run_id = pg_engine.trigger("diamond", {"x": "2"})
    const = pg_engine.dispatcher.sent.pop(0)
    _, seen, _ = statements_of(pg_engine.store, Executor(pg_engine).execute, run_id,
                               const.node, 1, "w")
    assert sum(s.startswith("UPDATE qflow_tasks SET up_succeeded") for s in seen) == 1
    assert drain(pg_engine) == ["add", "add__1", "add__2"]
    assert run_of(pg_engine, run_id)["state"] == "succeeded"
    with pg_engine.store.read() as conn:
        assert read.results(conn, run_id, ["add__2"]) == {"add__2": 2 + 10 + 2 + 20}


def test_a_poll_for_a_run_survives_its_connection_being_dropped(pg_engine):
    engine = pg_engine
    run_id = engine.trigger("diamond", {"x": "1"})
    drain(engine)
    pid = engine.store.read_once(lambda conn: conn.exec_driver_sql(
        "SELECT pg_backend_pid()").scalar())
    assert engine.store.read_once(lambda conn: conn.exec_driver_sql(
        "SELECT pg_backend_pid()").scalar()) == pid            # the same kept connection
    admin = sa.create_engine(engine.store.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
    admin.dispose()
    assert engine.wait(run_id, timeout=10)["state"] == "succeeded"


def test_a_small_run_is_triggered_in_one_statement_committed_on_its_own(pg_engine):
    engine = pg_engine
    run_id, seen, commits = statements_of(engine.store, engine.trigger, "diamond",
                                          {"x": "3"})
    assert (len(seen), commits) == (1, 0), seen
    assert [d.node for d in engine.dispatcher.sent] == ["const"]
    assert run_of(engine, run_id)["state"] == "queued"
    # a pool, a limit or a map makes it a transaction again (their statements with it)
    engine.set_pool("warehouse", 2)
    engine.trigger("pooled", {"n": "2"})
    _, seen, commits = statements_of(engine.store, engine.trigger, "pooled", {"n": "2"})
    assert len(seen) > 1 and commits == 1, seen
    assert drain(engine)[0] == "const"
    assert run_of(engine, run_id)["state"] == "succeeded"


def test_a_kept_connection_idle_for_a_while_is_pinged_and_replaced_if_gone(pg_engine,
                                                                            monkeypatch):
    """The kept autocommit connection (a trigger's, a claim's) of a client that sat idle
    while the server dropped it: the next write goes through on a fresh one."""
    engine = pg_engine
    engine.trigger("diamond", {"x": "1"})
    pid = engine.store.read_once(lambda conn: conn.exec_driver_sql(
        "SELECT pg_backend_pid()").scalar())
    admin = sa.create_engine(engine.store.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar()
    admin.dispose()
    monkeypatch.setattr(db, "PING_IDLE", 0.0)        # idle long enough
    run_id = engine.trigger("diamond", {"x": "2"})
    assert run_of(engine, run_id)["state"] == "queued"


def test_an_outcome_in_a_big_run_reads_a_few_rows_not_the_whole_run(pg_engine):
    """Counted in its children by its own statement, a task reads their rows by the index,
    even with a plan made once for every run (as a worker's prepared statements are) on
    statistics from before the run was written."""
    engine = pg_engine
    run_id = engine.trigger("fan", {"width": 1000})               # 2,001 tasks
    first = engine.dispatcher.sent[0]
    claimed = engine.store.transact(attempts.claim, run_id, first.node, 1, "w", None)
    assert claimed.listed == ("add",) if first.node == "const" else claimed.listed
    fetched = ("SELECT idx_tup_fetch + coalesce(seq_tup_read, 0) FROM "
               "pg_stat_xact_user_tables WHERE relname = 'qflow_tasks'")
    with engine.store.write() as conn:
        driver = conn.connection.driver_connection
        driver.prepare_threshold = 0                              # prepared at once
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        before = conn.exec_driver_sql(fetched).scalar()
        try:
            finished = attempts.finish(conn, run_id, first.node, 1,
                                       Outcome("succeeded", result="1"),
                                       children=claimed.listed)
        finally:
            driver.prepare_threshold = 5
        read_rows = conn.exec_driver_sql(fetched).scalar() - before
    assert [d.node for d in finished.released] == [claimed.listed[0]]
    assert read_rows < 20, read_rows
