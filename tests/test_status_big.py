"""`qflow status` of a run with more tasks than it lists (qflow.store.overview.LIST_BOUND,
lowered here to 10): counts per state and per node, the tasks worth a look, and a line
saying how many are not listed; `--all` and `--json` list every task. On SQLite and
PostgreSQL, read without SQLAlchemy and through it alike."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from qflow.cli import show
from qflow.cli.commands import cli
from qflow.store import Store, overview
from qflow.store import status as read_status
from qflow.store.migrate import upgrade
from qflow.store.models import edges, runs, tasks

T0 = dt.datetime(2026, 11, 30, 10)
ELEMENTS = 24


def _shape(ended: bool) -> dict[str, tuple[str, int | None, int | None, str | None]]:
    """node: (state, started, finished (seconds after T0), error): a map ``square`` of 24
    elements between ``numbers`` and ``total``; all succeeded but one failed (``total``
    upstream_failed), or (not ended) half queued with one running."""
    out = {"numbers": ("succeeded", 0, 1, None),
           "square": ("succeeded", None, 9, None) if ended else ("pending", None, None, None)}
    for i in range(ELEMENTS):
        done = ended or i < ELEMENTS // 2
        out[f"square[{i}]"] = (("succeeded", 1, 2 + i % 3, None) if done
                               else ("queued", None, None, None))
    out["square[5]"] = ("failed", 1, 9, "ValueError: five")
    if not ended:
        out["square[20]"] = ("running", 3, None, None)
    out["total"] = ("upstream_failed", None, 9, None) if ended else ("pending", None, None,
                                                                       None)
    return out


def _insert(store: Store, run_id: str, ended: bool) -> None:
    def at(seconds):
        return None if seconds is None else T0 + dt.timedelta(seconds=seconds)
    shape = _shape(ended)
    ends = Counter(state for node, (state, *_) in shape.items() if "[" in node)
    with store.write() as conn:
        conn.execute(sa.insert(runs).values(
            id=run_id, workflow="big_map", state="failed" if ended else "running",
            params="{}", created_at=T0, started_at=T0, finished_at=at(9) if ended else None,
            tasks_total=len(shape), tasks_left=0 if ended else 14))
        conn.execute(sa.insert(tasks), [
            dict(run_id=run_id, node=node, task="m.f", state=state, started_at=at(start),
                 finished_at=at(end), error=error, attempts=0 if start is None else 1,
                 worker=None if start is None else "w1@host")
            for node, (state, start, end, error) in shape.items()])
        # As a run keeps them: the map's elements are its parents, counted as they end.
        conn.execute(sa.update(tasks).where(tasks.c.run_id == run_id, tasks.c.node == "square")
                     .values(expanded=ELEMENTS, n_parents=1 + ELEMENTS,
                             up_succeeded=1 + ends["succeeded"], up_failed=ends["failed"]))
        conn.execute(sa.insert(edges), [
            dict(run_id=run_id, parent=parent, child=child) for parent, child in
            [("numbers", "square"), ("square", "total"),
             *((f"square[{i}]", "square") for i in range(ELEMENTS))]])


@pytest.fixture(params=["rows", "counters"])
def big(db_url, monkeypatch, request):
    """A DB with two runs of 27 tasks each (``ended``, ``running``), shown as big ones;
    their map's elements counted row by row, or (``counters``: overview.MAP_BOUND
    lowered) from the map's counters and the run's moving tasks."""
    store = Store(db_url)
    upgrade(store)
    _insert(store, "e" * 32, ended=True)
    _insert(store, "a" * 32, ended=False)
    store.dispose()
    monkeypatch.setattr(overview, "LIST_BOUND", 10)
    if request.param == "counters":
        monkeypatch.setattr(overview, "MAP_BOUND", 10)
    return {"url": db_url, "ended": "e" * 32, "running": "a" * 32}


def status(big, run_id: str, *args: str, plain: bool = True, broker: bool = False) -> str:
    """What `qflow status RUN ARGS` prints, read without SQLAlchemy or (``plain`` false)
    through it."""
    env = {"QFLOW_BROKER_URL": "redis://127.0.0.1:1/0"} if broker else {}
    with pytest.MonkeyPatch.context() as patch:
        if not plain:
            patch.setattr(read_status, "plainly", lambda *a: None)
        done = CliRunner().invoke(cli, ["--database-url", big["url"], "status", run_id, *args],
                                  env=env, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.output


def test_a_big_run_shows_counts_the_failed_task_and_how_many_are_not_listed(big):
    out = status(big, big["ended"])
    lines = out.splitlines()
    assert "  tasks    27: 25 succeeded, 1 failed, 1 upstream_failed" in lines
    assert ["square[…]", "24", "23", "1", "-"] in [line.split() for line in lines]
    assert any(line.split()[:2] == ["square[5]", "failed"] and "ValueError: five" in line
               for line in lines)
    assert any(line.split()[:2] == ["total", "upstream_failed"] for line in lines)
    assert "square[4]" not in out and "numbers  succeeded" not in out
    assert (f"  25 tasks not listed (25 succeeded): `qflow status {big['ended']} --all` "
            "lists every one") in lines
    # Its time summary: the slowest tasks from the DB, no critical path walked.
    assert "  critical path  not computed for a run of more than 10 tasks (9.00s in all)" in lines
    assert "  slowest        square[5] 8.00s, square[2] 3.00s, square[8] 3.00s, square[11] " \
           "3.00s, square[14] 3.00s" in lines
    assert status(big, big["ended"], plain=False) == out


def test_a_big_running_run_lists_what_runs_and_warns_of_its_queue_on_both_paths(big):
    out = status(big, big["running"], broker=True)
    lines = out.splitlines()
    assert "  tasks    27: 2 pending, 11 queued, 1 running, 12 succeeded, 1 failed" in lines
    listed = [line.split()[:2] for line in lines if line.startswith("  square[")]
    assert listed == [["square[…]", "24"], ["square[5]", "failed"], ["square[20]", "running"]]
    assert ("qflow: warning: no live worker serves queue 'default', which square[12], "
            "square[13], square[14] and 8 more wait on: start one with "
            "`qflow worker -Q default`") in lines
    assert status(big, big["running"], plain=False, broker=True) == out


@pytest.mark.parametrize("plain", [True, False])
def test_all_and_json_list_every_task_of_a_big_run(big, plain):
    every = status(big, big["ended"], "--all", plain=plain)
    listed = [line.split()[0] for line in every.splitlines() if line.startswith("  ")
              and line.split()[0] in _shape(True)]
    assert listed == list(_shape(True)) and "not listed" not in every
    found = json.loads(status(big, big["ended"], "--json", plain=plain))
    assert [t["node"] for t in found["tasks"]] == list(_shape(True))
    assert found["tasks"][7] == {
        "node": "square[5]", "state": "failed", "attempts": 1,
        "started_at": "2026-11-30T10:00:01+00:00", "finished_at": "2026-11-30T10:00:09+00:00",
        "error": "ValueError: five", "worker": "w1@host", "celery_id": None, "queue": None,
        "traceback": None}
    assert found["summary"]["slowest"][0] == {"node": "square[5]", "seconds": 8.0}
    assert found["summary"]["critical_path"] == [] and "counts" not in found


def test_the_json_of_a_big_run_is_what_json_dumps_writes_of_it(big):
    """Written a task at a time (the tasks are read as they are written), the same bytes."""
    from qflow.client import run_status
    from qflow.config import Config
    from qflow.runtime import Runtime

    rt = Runtime(Config(database_url=big["url"]))
    whole = run_status(rt, big["ended"])
    rt.store.dispose()
    assert isinstance(whole["tasks"], list) and len(whole["tasks"]) == 27
    assert status(big, big["ended"], "--json") == json.dumps(whole, indent=2) + "\n"


@pytest.mark.parametrize("run", [
    {"a": 1, "tasks": [], "z": None},
    {"a": "x\n\"y\" é ☃", "tasks": [{"node": "n[1]", "late": True, "error": "é\nb"}],
     "tail": {"k": [1, 2]}},
    {"tasks": [{"n": 1}, {"a": None, "b": 2.5, "c": False}], "after": [], "u": "\u2028"}])
def test_write_json_writes_what_json_dumps_writes(run):
    parts: list[str] = []
    show.write_json({**run, "tasks": iter(run["tasks"])}, parts.append)
    assert "".join(parts) == json.dumps(run, indent=2) + "\n"


def test_a_small_run_is_listed_whole_as_before(big, monkeypatch):
    monkeypatch.setattr(overview, "LIST_BOUND", 1000)
    out = status(big, big["ended"])
    assert "not listed" not in out
    assert ["square[4]", "succeeded"] in [line.split()[:2] for line in out.splitlines()]
    assert "not computed" not in out and "  tasks " not in out


def test_the_counts_of_a_run_of_many_nodes_show_the_first_ones_and_how_many_more():
    from qflow.cli import tables

    nodes = [{"node": f"n{i}", "counts": {"succeeded": 1}} for i in range(overview.NODE_ROWS
                                                                            + 7)]
    run = {"run_id": "r" * 32, "workflow": "w", "state": "succeeded", "params": {},
           "created_at": "2026-11-30T10:00:00+00:00", "started_at": None, "finished_at": None,
           "counts": {"succeeded": len(nodes)}, "nodes": nodes, "tasks": []}
    lines = tables.to_text(tables.status_table(run)).splitlines()
    firsts = [line.split()[0] for line in lines if line.startswith("  n")]
    assert firsts == [f"n{i}" for i in range(overview.NODE_ROWS)]
    assert "  … 7 more nodes" in lines and "NODE  STATE" not in "\n".join(lines)
    assert lines[-1] == (f"  {len(nodes)} tasks not listed ({len(nodes)} succeeded): "
                         f"`qflow status {'r' * 32} --all` lists every one")


def test_the_counts_of_a_real_map_run_equal_a_group_by_at_every_step(db_url, monkeypatch):
    """tests/flows.py's ``mapped`` over 40 elements, run in process with a stub dispatcher:
    its map counted from its counters (overview.MAP_BOUND lowered to 10) has the counts,
    per node and for the run, and the waiting tasks of one GROUP BY over every row, while
    it runs (some elements running) and once it ended."""
    import flows  # noqa: F401 - registers the workflows
    from test_store import StubDispatcher, migrated
    from test_web_big import step

    from qflow.config import Config
    from qflow.engine.client import Engine

    store = migrated(db_url)
    engine = Engine(Config(database_url=db_url), store, StubDispatcher())
    run_id = engine.trigger("mapped", {"n": 40, "fail_on": 7})
    monkeypatch.setattr(overview, "MAP_BOUND", 10)

    def check(ended: bool) -> dict[str, int]:
        with store.read() as conn:
            truth = overview._tallied(read_status.rows(conn, "node_counts", run_id=run_id))
            found = overview.counts(conn, run_id, ended)
        assert found[:2] == truth[:2]
        assert {q: n for q, (n, _) in found[2].items()} == \
            {q: n for q, (n, _) in truth[2].items()}
        return found[0]

    step(engine, lambda node: "[" not in node)                    # numbers, const: the map
    assert check(False)["queued"] == 40
    step(engine, lambda node: node.startswith("scale[") and int(node[6:-1]) < 25)
    with store.write() as conn:                                     # two claimed, not ended
        conn.execute(sa.update(tasks).where(tasks.c.run_id == run_id,
                                            tasks.c.node.in_(["scale[30]", "scale[31]"]))
                     .values(state="running", attempts=1))
    assert check(False)["running"] == 2
    with store.write() as conn:
        conn.execute(sa.update(tasks).where(tasks.c.run_id == run_id,
                                            tasks.c.node.in_(["scale[30]", "scale[31]"]))
                     .values(state="queued", attempts=0))
    for _ in range(5):
        step(engine, lambda node: True)
    with store.read() as conn:
        state = conn.execute(sa.select(runs.c.state).where(runs.c.id == run_id)).scalar()
    assert state == "failed"
    assert check(True)["failed"] == 2                 # scale[7] and the map itself
    store.dispose()


def test_the_slowest_of_a_run_above_the_bound_are_not_looked_for_and_it_says_so(big,
                                                                                  monkeypatch):
    monkeypatch.setattr(overview, "SLOWEST_BOUND", 26)
    lines = status(big, big["ended"]).splitlines()
    assert "  slowest        not looked for in a run of more than 26 tasks" in lines
    summary = json.loads(status(big, big["ended"], "--json"))["summary"]
    assert summary["slowest"] == [] and summary["slowest_skipped"] is True


def test_status_watch_of_a_big_run_shows_its_counts_as_they_change_until_it_ends(
        big, monkeypatch):
    """`status --watch` of a big run prints what `status` prints (counts and the tasks
    worth a look, no row per task read), again on each change, and exits 1 when the run
    fails; `--watch --all` lists every task."""
    def never(*args, **kwargs):
        raise AssertionError("status --watch of a big run read every task")

    def change(run_id: str) -> None:
        store = Store(big["url"])
        time.sleep(0.5)
        with store.write() as conn:            # the running element fails
            conn.execute(sa.update(tasks).where(tasks.c.run_id == run_id,
                                                tasks.c.node == "square[20]")
                         .values(state="failed", finished_at=T0 + dt.timedelta(seconds=9),
                                 error="ValueError: twenty"))
            conn.execute(sa.update(tasks).where(tasks.c.run_id == run_id,
                                                tasks.c.node == "square")
                         .values(up_failed=tasks.c.up_failed + 1))
        time.sleep(0.5)
        with store.write() as conn:            # the run ends: the rest canceled
            conn.execute(sa.update(tasks).where(tasks.c.run_id == run_id,
                                                tasks.c.state == "queued")
                         .values(state="canceled"))
            conn.execute(sa.update(tasks).where(tasks.c.run_id == run_id,
                                                tasks.c.state == "pending")
                         .values(state="upstream_failed"))
            conn.execute(sa.update(tasks).where(tasks.c.run_id == run_id,
                                                tasks.c.node == "square")
                         .values(up_skipped=11))
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(
                state="failed", finished_at=T0 + dt.timedelta(seconds=9)))
        store.dispose()

    every_task = read_status._add_tasks
    monkeypatch.setattr(read_status, "_add_tasks", never)
    ending = threading.Thread(target=change, args=(big["running"],))
    ending.start()
    done = CliRunner().invoke(cli, ["--database-url", big["url"], "status", big["running"],
                                    "--watch", "--interval", "0.05"], catch_exceptions=False)
    ending.join()
    assert done.exit_code == 1, done.output
    lines = done.output.splitlines()
    totals = [line for line in lines if line.startswith("  tasks ")]
    assert totals == ["  tasks    27: 2 pending, 11 queued, 1 running, 12 succeeded, 1 failed",
                      "  tasks    27: 2 pending, 11 queued, 12 succeeded, 2 failed",
                      "  tasks    27: 12 succeeded, 2 failed, 2 upstream_failed, 11 canceled"]
    assert any(line.split()[:2] == ["square[20]", "failed"] and "ValueError: twenty" in line
               for line in lines)
    assert "square[4]" not in done.output
    monkeypatch.setattr(read_status, "_add_tasks", every_task)
    every = CliRunner().invoke(cli, ["--database-url", big["url"], "status", big["ended"],
                                     "--watch", "--all"], catch_exceptions=False)
    assert every.exit_code == 1 and "square[4]" in every.output
    assert "tasks not listed" not in every.output
