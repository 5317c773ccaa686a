"""The scheduler, backfills and pauses.

In process with a controllable clock against real SQLite and PostgreSQL (messages drained
by hand), then as a user runs them: `qflow scheduler` processes on a private Redis and a
fresh PostgreSQL database, and the `backfill`, `pause` and `workflows` commands.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import threading
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import flows
import pytest
import sched_flows
from conftest import ROOT, Cluster, new_pg_database
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from test_cli import assert_one_line_error, qflow
from test_store import StubDispatcher, drain, engine  # noqa: F401 - the engine fixture

from qflow import workflow
from qflow.core.schedule import from_options
from qflow.engine import scheduler as S
from qflow.engine.client import Engine
from qflow.store import Store, lifecycle, read, schedules
from qflow.store.lifecycle import NewRun
from qflow.store.migrate import upgrade
from qflow.store.models import runs

UTC = dt.timezone.utc
SCHED_FLOWS = str(ROOT / "tests" / "sched_flows.py")
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, minutes: float = 0, seconds: float = 0) -> None:
        self.now = T0 + dt.timedelta(minutes=minutes, seconds=seconds)


def minutely(name: str, **options):
    """Register a workflow firing every minute whose one task stamps its logical time."""
    @workflow(name=name, schedule="* * * * *", **options)
    def body(tag: str = "t"):
        sched_flows.stamp(tag)
    return body


def logical_times(engine: Engine, name: str) -> list[dt.datetime]:
    """Logical times of the workflow's runs, in the order the runs were created."""
    with engine.store.read() as conn:
        rows = conn.execute(select(runs.c.logical_time).where(runs.c.workflow == name)
                            .order_by(runs.c.created_at, runs.c.id)).scalars()
        return [t.replace(tzinfo=UTC) for t in rows]


def at(*minutes: int) -> list[dt.datetime]:
    return [T0 + dt.timedelta(minutes=m) for m in minutes]


def created(fired: list[S.Fired]) -> list[tuple[str, dt.datetime]]:
    return [(f.workflow, f.logical_time) for f in fired if f.outcome == S.CREATED]


# -- in process, controllable clock ---------------------------------------------------------
def test_each_fire_time_becomes_one_run_whose_tasks_read_its_logical_time(engine, registry):
    minutely("report", params={"tag": "scheduled"})
    clock = Clock(T0 + dt.timedelta(seconds=30))
    sched = S.Scheduler(engine, clock)
    assert sched.tick() == []                     # 12:00 was before it was first seen
    clock.set(minutes=1)
    assert created(sched.tick()) == [("report", at(1)[0])]
    assert sched.tick() == []                     # the same moment again: nothing new
    drain(engine)
    with engine.store.read() as conn:
        run = read.list_runs(conn, "report")[0]
        assert run["logical_time"] == "2026-06-01T12:01:00+00:00"
        assert run["state"] == "succeeded"
        assert read.results(conn, run["run_id"], ["stamp"])["stamp"] == {
            "logical_time": "2026-06-01T12:01:00+00:00", "tag": "scheduled"}


def test_after_an_outage_catchup_runs_every_missed_time_oldest_first(engine, registry):
    minutely("caught_up", catchup=True)
    minutely("latest_only")
    clock = Clock(T0 + dt.timedelta(seconds=30))
    sched = S.Scheduler(engine, clock)
    sched.tick()
    clock.set(minutes=1)
    sched.tick()
    clock.set(minutes=6, seconds=20)              # the scheduler was down for 5 minutes
    fired = created(sched.tick())
    assert fired == [("caught_up", t) for t in at(2, 3, 4, 5, 6)] + [("latest_only", at(6)[0])]
    assert logical_times(engine, "caught_up") == at(1, 2, 3, 4, 5, 6)
    assert logical_times(engine, "latest_only") == at(1, 6)


def test_max_active_runs_holds_back_new_runs_until_one_ends(engine, registry):
    minutely("one_at_a_time", max_active_runs=1, catchup=True)
    minutely("newest_only", max_active_runs=1)
    clock = Clock(T0)
    sched = S.Scheduler(engine, clock)
    sched.tick()
    for minute in (1, 2, 3):
        clock.set(minutes=minute)
        sched.tick()
    assert logical_times(engine, "one_at_a_time") == at(1)     # 12:01 still queued
    drain(engine)
    clock.set(minutes=3, seconds=5)
    sched.tick()
    drain(engine)
    sched.tick()
    # With catch-up the held times run late, in order; without it only the newest does.
    assert logical_times(engine, "one_at_a_time") == at(1, 2, 3)
    assert logical_times(engine, "newest_only") == at(1, 3)


def test_pause_stops_new_runs_and_unpause_resumes_from_then(engine, registry):
    minutely("pausable")
    clock = Clock(T0)
    sched = S.Scheduler(engine, clock)
    sched.tick()
    clock.set(minutes=1)
    sched.tick()
    engine.store.transact(schedules.set_paused, "pausable", True, S.to_store(clock()))
    for minute in (2, 3):
        clock.set(minutes=minute)
        assert sched.tick() == []
    clock.set(minutes=3, seconds=30)
    engine.store.transact(schedules.set_paused, "pausable", False, S.to_store(clock()))
    assert sched.tick() == []                     # 12:02 and 12:03 are not made up for
    clock.set(minutes=4)
    sched.tick()
    assert logical_times(engine, "pausable") == at(1, 4)


def test_schedulers_ticking_at_the_same_moment_create_each_time_once(engine, registry):
    minutely("contended", catchup=True, start_date=T0, max_active_runs=100)
    clock = Clock(T0 + dt.timedelta(minutes=30, seconds=1))
    other = Store(engine.store.url)                # its own connections, like a 2nd process
    schedulers = [S.Scheduler(engine, clock),
                  S.Scheduler(Engine(engine.config, other, StubDispatcher()), clock)]
    barrier = threading.Barrier(len(schedulers))
    results: list[list[S.Fired]] = [[] for _ in schedulers]

    def tick(i: int) -> None:
        barrier.wait()
        for _ in range(3):
            results[i] += schedulers[i].tick()

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(len(schedulers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    other.dispose()
    times = logical_times(engine, "contended")
    assert sorted(times) == at(*range(31)) and max(Counter(times).values()) == 1
    assert sum(len(created(r)) for r in results) == 31


def test_the_db_refuses_a_second_run_for_a_logical_time_but_not_for_manual_runs(engine):
    graph = flows.diamond.expand()
    when = S.to_store(T0)
    engine.store.transact(lifecycle.insert_run, NewRun("a" * 32, graph, {"x": 1}, when))
    with pytest.raises(IntegrityError):
        engine.store.transact(lifecycle.insert_run, NewRun("b" * 32, graph, {"x": 1}, when))
    for run_id in ("c" * 32, "d" * 32):
        engine.store.transact(lifecycle.insert_run, NewRun(run_id, graph, {"x": 1}, None))


def test_backfill_creates_one_run_per_day_skips_succeeded_and_reruns_on_request(engine):
    nightly = sched_flows.nightly                  # @daily in Europe/Paris
    schedule = from_options(nightly.options)
    week = schedule.between(dt.datetime(2026, 1, 1, tzinfo=schedule.tz),
                            dt.datetime(2026, 1, 7, tzinfo=schedule.tz), 100)
    # Jan 3 in Paris starts at 23:00 UTC on Jan 2: that run fails.
    first = S.backfill(engine, nightly, week, {"tag": "bf", "fail_on": "2026-01-02T23"},
                       rerun=False)
    assert [f.outcome for f in first] == [S.CREATED] * 7
    drain(engine)
    again = S.backfill(engine, nightly, week, {"tag": "bf"}, rerun=False)
    assert [f.outcome for f in again] == [S.SUCCEEDED_ALREADY] * 2 + [S.CREATED] + \
        [S.SUCCEEDED_ALREADY] * 4                  # only the failed day runs again
    rerun = S.backfill(engine, nightly, week[:2], {"tag": "bf"}, rerun=True)
    assert [f.outcome for f in rerun] == [S.CREATED, S.CREATED]
    drain(engine)
    with engine.store.read() as conn:
        rows = conn.execute(select(runs.c.logical_time, runs.c.state, runs.c.superseded_by)
                            .where(runs.c.workflow == "nightly")).all()
    current = Counter(r.logical_time for r in rows if r.superseded_by is None)
    assert len(current) == 7 and set(current.values()) == {1}
    assert len(rows) == 7 + 1 + 2                   # the superseded runs stay in history
    assert {r.state for r in rows if r.superseded_by is None} == {"succeeded"}


def test_backfill_skips_a_time_whose_run_is_still_queued_even_with_rerun(engine):
    nightly = sched_flows.nightly
    day = [dt.datetime(2026, 1, 1, tzinfo=UTC)]
    assert S.backfill(engine, nightly, day, {"tag": "x"}, rerun=False)[0].outcome == S.CREATED
    assert S.backfill(engine, nightly, day, {"tag": "x"}, rerun=True)[0].outcome == S.ACTIVE


def test_backfilled_runs_beyond_max_active_runs_wait_their_turn(engine, registry):
    one_by_one = workflow(name="one_by_one", schedule="@daily", max_active_runs=1,
                          params={"tag": "x"})(sched_flows.nightly.fn)
    days = [dt.datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 3)]
    assert [f.outcome for f in S.backfill(engine, one_by_one, days, {}, False)] == \
        [S.CREATED] * 3
    assert len(engine.dispatcher.sent) == 1            # the other two are held
    drain(engine)
    with engine.store.read() as conn:
        done = read.list_runs(conn, "one_by_one")
    assert {r["state"] for r in done} == {"succeeded"}
    order = sorted(done, key=lambda r: r["started_at"])
    assert [r["logical_time"][:10] for r in order] == ["2026-01-01", "2026-01-02",
                                                       "2026-01-03"]


# -- as a user runs it ----------------------------------------------------------------------
class Schedulers(Cluster):
    """`qflow scheduler` (and worker) processes on sched_flows.py."""

    def __init__(self, redis_url: str, pg_server_url: str, folder: Path):
        # A Redis DB of its own: the session's workers must not take these messages.
        broker = redis_url.rsplit("/", 1)[0] + "/5"
        super().__init__(broker, new_pg_database(pg_server_url), SCHED_FLOWS, folder)
        self.store = Store(self.database_url)
        upgrade(self.store)

    def pause_all_but(self, *keep: str) -> None:
        names = [n for n in sched_flows.ALL if n not in keep]
        out = qflow("pause", *names, cwd=self.folder, env=self.env)
        assert out.stdout.split() == [w for n in names for w in ("paused", n)], out.stderr

    def start_scheduler(self, name: str) -> None:
        log = open(self.folder / f"{name}.log", "a")
        self.workers[name] = subprocess.Popen(
            ["qflow", "scheduler", "-l", "DEBUG"], env=self.env, stdout=log,
            stderr=subprocess.STDOUT, cwd=self.folder)

    def wait_log(self, name: str, text: str, count: int = 1, timeout: float = 30) -> None:
        log, deadline = self.folder / f"{name}.log", time.monotonic() + timeout
        while log.read_text().count(text) < count:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

    def stop_one(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.terminate()
        assert proc.wait(20) == 0, (self.folder / f"{name}.log").read_text()

    def runs(self, workflow: str) -> list[dict]:
        with self.store.read() as conn:
            return read.list_runs(conn, workflow, limit=10_000)

    def stop(self) -> None:
        super().stop()
        self.store.dispose()


def times_of(runs_: list[dict]) -> list[dt.datetime]:
    return sorted(dt.datetime.fromisoformat(r["logical_time"]) for r in runs_)


def test_two_scheduler_processes_fire_every_logical_time_exactly_once(
        redis_url, pg_server_url, tmp_path):
    """Both fire every 2 s for 20 s; the DB lets one win each time; a worker runs them."""
    c = Schedulers(redis_url, pg_server_url, tmp_path)
    c.pause_all_but("every_2s")
    c.start_worker("w1", "-c", "2")
    try:
        c.start_scheduler("s1")
        c.start_scheduler("s2")
        for name in ("s1", "s2"):              # a busy machine takes seconds to start them
            c.wait_log(name, "scheduler started")
        started = dt.datetime.now(UTC)
        time.sleep(20)
        c.stop_one("s1")
        c.stop_one("s2")
        stopped = dt.datetime.now(UTC)
        deadline = time.monotonic() + 15
        while any(r["state"] in ("queued", "running") for r in c.runs("every_2s")) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        c.stop()
    made = c.runs("every_2s")
    times = times_of(made)
    assert max(Counter(times).values()) == 1, "a logical time ran twice"
    steps = {(b - a).total_seconds() for a, b in pairwise(times)}
    assert steps == {2.0}, f"missing logical times: {times}"
    assert len(times) >= 8 and times[0] >= started - dt.timedelta(seconds=2)
    assert times[-1] >= stopped - dt.timedelta(seconds=4)
    assert {r["state"] for r in made} == {"succeeded"}
    for name in sched_flows.ALL[1:]:
        assert c.runs(name) == [], f"paused workflow {name} ran"
    logs = [(tmp_path / f"s{i}.log").read_text() for i in (1, 2)]
    assert all("scheduler started" in log and "Traceback" not in log for log in logs)


def test_a_restarted_scheduler_catches_up_missed_times_only_with_catchup(
        redis_url, pg_server_url, tmp_path):
    c = Schedulers(redis_url, pg_server_url, tmp_path)
    c.pause_all_but("catchup_1s", "latest_1s")
    try:
        c.start_scheduler("before")
        c.wait_log("before", "created run", count=4)     # two of each workflow
        c.stop_one("before")
        down = dt.datetime.now(UTC)
        time.sleep(3)                               # the outage
        up = dt.datetime.now(UTC)
        c.start_scheduler("after")
        c.wait_log("after", "scheduler started")
        time.sleep(2)
        c.stop_one("after")
    finally:
        c.stop()
    caught_up = times_of(c.runs("catchup_1s"))
    assert {(b - a).total_seconds() for a, b in pairwise(caught_up)} == {1.0}
    assert sum(down < t < up for t in caught_up) >= 2
    latest = times_of(c.runs("latest_1s"))
    assert sum(down + dt.timedelta(seconds=1) < t <= up for t in latest) <= 1
    assert caught_up[-1] - latest[-1] <= dt.timedelta(seconds=1)


def test_backfill_command_creates_7_runs_then_none_then_reruns(tmp_path):
    def backfill(*extra: str) -> dict:
        """The 7 days of the issue: one run each, at midnight in Paris."""
        out = qflow("-A", SCHED_FLOWS, "backfill", "nightly", "--start", "2026-01-01",
                    "--end", "2026-01-07", "--json", *extra, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    first = backfill()
    assert first["created"] == 7 and first["skipped"] == 0
    assert first["logical_times"][0]["logical_time"] == "2026-01-01T00:00:00+01:00"
    run = json.loads(qflow("status", first["logical_times"][0]["run_id"], "--json",
                           cwd=tmp_path).stdout)
    assert run["state"] == "succeeded" and run["params"] == {"tag": "nightly", "fail_on": ""}
    assert run["logical_time"] == "2025-12-31T23:00:00+00:00"
    assert backfill()["created"] == 0
    rerun = backfill("--rerun", "-p", "tag=again")
    assert rerun["created"] == 7
    runs_ = json.loads(qflow("runs", "--workflow", "nightly", "--json", cwd=tmp_path).stdout)
    assert len(runs_) == 14 and Counter(r["params"]["tag"] for r in runs_) == {
        "nightly": 7, "again": 7}


def test_pause_and_unpause_show_in_the_workflows_listing(tmp_path):
    def listing() -> dict:
        out = qflow("-A", SCHED_FLOWS, "workflows", "--json", cwd=tmp_path)
        return {w["name"]: w for w in json.loads(out.stdout)}

    before = listing()["nightly"]
    assert before["schedule"] == "@daily" and before["timezone"] == "Europe/Paris"
    assert before["paused"] is False and before["next_fire_time"].endswith(("+01:00",
                                                                              "+02:00"))
    assert qflow("-A", SCHED_FLOWS, "pause", "nightly", cwd=tmp_path).stdout == \
        "paused nightly\n"
    paused = listing()["nightly"]
    assert paused["paused"] is True and paused["next_fire_time"] is None
    text = qflow("-A", SCHED_FLOWS, "workflows", cwd=tmp_path).stdout
    assert re.search(r"^nightly\s+1\s+@daily Europe/Paris, paused ", text, re.M), text
    assert re.search(r"^every_2s\s+1\s+every 2s UTC, next ", text, re.M), text
    assert qflow("-A", SCHED_FLOWS, "unpause", "nightly", "nightly", cwd=tmp_path).stdout \
        == "unpaused nightly\nnightly was already unpaused\n"


BAD_CRON = """
from qflow import task, workflow

@task
def step():
    return 1

@workflow(schedule="0 25 * * *")
def nightly():
    step()
"""


@pytest.mark.parametrize("args, pattern", [
    (["-A", SCHED_FLOWS, "backfill", "nightly", "--start", "2026-01-07", "--end",
      "2026-01-01"], "--end is before --start"),
    (["-A", SCHED_FLOWS, "backfill", "nightly", "--start", "2999-01-01", "--end",
      "2999-01-02"], "--start is in the future"),
    (["-A", str(ROOT / "tests" / "flows.py"), "backfill", "diamond", "--start",
      "2026-01-01", "--end", "2026-01-02"], "workflow 'diamond' has no schedule"),
    (["-A", SCHED_FLOWS, "pause", "nope"], "unknown workflow 'nope'"),
    (["-A", str(ROOT / "tests" / "flows.py"), "scheduler"],
     "no loaded workflow has a schedule"),
])
def test_bad_scheduling_input_exits_2_with_one_line(tmp_path, args, pattern):
    assert_one_line_error(qflow(*args, cwd=tmp_path), 2, pattern)


def test_a_bad_cron_string_is_refused_when_the_workflows_load(tmp_path):
    (tmp_path / "bad_cron.py").write_text(BAD_CRON)
    out = qflow("-A", "bad_cron.py", "workflows", cwd=tmp_path)
    assert_one_line_error(out, 2, "@workflow on 'nightly': bad cron expression "
                                  "'0 25 * * *': hour field '25' is not valid: 0-23")
