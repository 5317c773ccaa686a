"""Trigger rules and branches decide as Airflow's scheduler does.

The pure table: every rule, every combination of 1-4 parents' states (a parent may still
be running) arriving in every order, against an oracle written from Airflow's trigger-rule
semantics. qflow decides after each parent ends, so the table replays the parents one at a
time and keeps the first decision. Then the same behaviour on real SQLite and PostgreSQL.
"""
from __future__ import annotations

import itertools
from collections import Counter

import pytest
from test_store import drain, engine, run_of  # noqa: F401 - the engine fixture

from qflow.core.outcomes import branch
from qflow.core.states import (
    RUN,
    SKIP,
    TRIGGER_RULES,
    UPSTREAM,
    WAIT,
    Upstream,
    decide,
)
from qflow.engine.executor import Executor
from qflow.store import read

RUNNING = "running"             # a parent that has not ended when the table looks
PARENT_STATES = ("succeeded", "failed", "upstream_failed", "skipped", "canceled", RUNNING)


def airflow(rule: str, n: int, ended: Counter) -> str:
    """What Airflow's scheduler does with a pending task whose ``n`` parents ended so far
    as ``ended`` says: first the state it sets at once (if any), else whether the rule's
    condition to run holds. A canceled parent counts as skipped (qflow's choice: Airflow
    has no canceled task state)."""
    ok = ended["succeeded"]
    bad = ended["failed"] + ended["upstream_failed"]
    skip = ended["skipped"] + ended["canceled"]
    done = ok + bad + skip == n
    sets_at_once = {
        "all_success": UPSTREAM if bad else SKIP if skip else None,
        "all_failed": SKIP if ok or skip else None,
        "one_success": (SKIP if skip == n else UPSTREAM if not ok else None) if done else None,
        "one_failed": SKIP if done and not bad else None,
        "none_failed": UPSTREAM if bad else None,
        "none_failed_min_one_success": UPSTREAM if bad else SKIP if skip == n else None,
    }.get(rule)
    if sets_at_once:
        return sets_at_once
    may_run = {
        "all_success": ok == n, "all_failed": bad == n, "all_done": done,
        "one_success": ok > 0, "one_failed": bad > 0, "none_failed": ok + skip == n,
        "none_failed_min_one_success": ok + skip == n, "always": True,
    }[rule]
    return RUN if may_run else WAIT


def qflow(rule: str, n: int, ended: Counter) -> str:
    """qflow's decision from the counters a task row keeps."""
    return decide(rule, Upstream(n, ended["succeeded"],
                                 ended["failed"] + ended["upstream_failed"],
                                 ended["skipped"] + ended["canceled"]))


def replay(judge, rule: str, parents: tuple[str, ...]) -> str:
    """Parents end one at a time in the given order (running ones never do); the task is
    judged when created and after each end, and keeps the first decision."""
    ended: Counter = Counter()
    verdict = judge(rule, len(parents), ended)
    for state in parents:
        if verdict != WAIT:
            break
        if state != RUNNING:
            ended[state] += 1
            verdict = judge(rule, len(parents), ended)
    return verdict


def orders(parents: tuple[str, ...]) -> set[tuple[str, ...]]:
    return set(itertools.permutations(parents))


COMBINATIONS = [combo for n in range(1, 5)
                for combo in itertools.combinations_with_replacement(PARENT_STATES, n)]


@pytest.mark.parametrize("parents", COMBINATIONS, ids="+".join)
def test_every_rule_decides_as_airflow_for_every_arrival_order(parents):
    for rule, order in itertools.product(TRIGGER_RULES, orders(parents)):
        expected = replay(airflow, rule, order)
        assert replay(qflow, rule, order) == expected, (rule, order)
        if RUNNING not in parents:        # once every parent ended, the task is decided
            assert expected != WAIT, (rule, order)


# Read as: rule, parents in the order they end (running ones never end) -> decision.
SPOT_CHECKS = [
    ("all_success", ("failed", RUNNING), UPSTREAM),        # no wait for the other parent
    ("all_success", ("skipped", RUNNING), SKIP),
    ("all_success", ("skipped", "failed"), SKIP),          # the first of them decides
    ("all_success", ("failed", "skipped"), UPSTREAM),
    ("all_success", ("succeeded", RUNNING), WAIT),
    ("all_success", ("canceled", "succeeded"), SKIP),
    ("all_failed", ("succeeded", RUNNING), SKIP),
    ("all_failed", ("skipped", "failed"), SKIP),
    ("all_failed", ("failed", "upstream_failed"), RUN),
    ("all_failed", ("failed", RUNNING), WAIT),
    ("all_done", ("failed", "skipped", RUNNING), WAIT),
    ("all_done", ("failed", "skipped"), RUN),
    ("one_success", ("succeeded", RUNNING), RUN),
    ("one_success", ("skipped", "skipped"), SKIP),
    ("one_success", ("skipped", "failed"), UPSTREAM),
    ("one_success", ("failed", RUNNING), WAIT),
    ("one_failed", ("upstream_failed", RUNNING), RUN),
    ("one_failed", ("succeeded", "skipped"), SKIP),
    ("none_failed", ("failed", RUNNING), UPSTREAM),
    ("none_failed", ("skipped", "skipped"), RUN),
    ("none_failed", ("skipped", RUNNING), WAIT),
    ("none_failed_min_one_success", ("upstream_failed", RUNNING), UPSTREAM),
    ("none_failed_min_one_success", ("skipped", RUNNING), WAIT),
    ("none_failed_min_one_success", ("skipped", "skipped"), SKIP),
    ("none_failed_min_one_success", ("skipped", "succeeded"), RUN),
    ("always", (RUNNING, RUNNING), RUN),
]


@pytest.mark.parametrize("rule, order, decision", SPOT_CHECKS)
def test_spot_checks_read_from_the_rules(rule, order, decision):
    assert replay(qflow, rule, order) == decision


def test_a_task_without_parents_runs_and_an_unknown_rule_is_refused():
    assert decide("all_success", Upstream(0)) == RUN
    with pytest.raises(ValueError, match="no_such_rule"):
        decide("no_such_rule", Upstream(1))


def test_a_branch_may_return_any_sequence_of_child_ids():
    children = ["a", "b", "c"]
    for value in ("a", ["a", "b"], ("a", "b"), None, []):
        assert branch(value, "pick", children).state == "succeeded", value
    assert branch(("a", "b"), "pick", children).chosen == ("a", "b")
    assert branch({"c", "a"}, "pick", children).chosen == ("a", "c")
    for value in (1, [1], ("a", 2), b"a", {"a": 1}):
        out = branch(value, "pick", children)
        assert (out.state, out.error_type) == ("failed", "BranchError"), value
    out = branch(("a", "z"), "pick", children)
    assert out.state == "failed" and "'z'" in out.error


# --- the same on real SQLite and PostgreSQL -------------------------------------------------

def states_of(db, run_id: str) -> dict[str, str]:
    return {t["node"]: t["state"] for t in run_of(db, run_id)["tasks"]}


def run_only(db, node: str) -> None:
    """Run the published message of ``node`` alone; the others stay published."""
    item = next(d for d in db.dispatcher.sent if d.node == node)
    db.dispatcher.sent.remove(item)
    assert Executor(db).execute(item.run_id, item.node, item.attempt, "test") is not None


@pytest.fixture
def skip_or_fail(registry):
    """``joined`` (all_success) waits on a branch's unfollowed child and on a task that
    fails; ``after`` (none_failed) follows ``joined``."""
    from qflow import task, workflow

    @task.branch
    def follow_none():
        return None

    @task
    def unfollowed() -> int:
        return 1

    @task
    def breaks():
        raise RuntimeError("late failure")

    @task
    def joined(a, b) -> int:
        return 2

    @task(trigger_rule="none_failed")
    def after() -> int:
        return 3

    @workflow
    def skip_or_fail():
        first = follow_none()
        skipped = unfollowed()
        first >> skipped
        joined(skipped, breaks()) >> after()


@pytest.mark.parametrize("first, joined, after", [
    ("follow_none", "skipped", "succeeded"),        # the skip came first: skipped
    ("breaks", "upstream_failed", "upstream_failed"),
])
def test_an_all_success_task_ends_at_its_first_failed_or_skipped_parent(
        engine, skip_or_fail, first, joined, after):  # noqa: F811 - the engine fixture
    run_id = engine.trigger("skip_or_fail", {})
    run_only(engine, first)
    got = states_of(engine, run_id)
    assert got["joined"] == joined                   # decided with a parent still queued
    assert "queued" in (got["follow_none"], got["breaks"])
    drain(engine)
    got = states_of(engine, run_id)
    assert (got["breaks"], got["unfollowed"]) == ("failed", "skipped")
    assert (got["joined"], got["after"]) == (joined, after)
    assert [n for n, s in got.items() if s in ("failed", "upstream_failed")] == \
        ["breaks"] + (["joined", "after"] if first == "breaks" else [])
    assert run_of(engine, run_id)["state"] == "failed"      # breaks failed


def test_a_branch_runs_an_unchosen_child_downstream_of_the_chosen_one(
        engine, registry):  # noqa: F811 - the engine fixture
    from qflow import task, workflow

    @task.branch
    def route() -> str:
        return "near"

    @task
    def near() -> int:
        return 1

    @task
    def middle(value: int) -> int:
        return value + 1

    @task
    def join_all() -> str:
        return "joined"

    @task
    def elsewhere() -> int:
        return 0

    @task
    def after_elsewhere() -> int:
        return 0

    @workflow
    def branch_and_join():
        r, j, e = route(), join_all(), elsewhere()
        n = near()
        r >> [n, j, e]
        middle(n) >> j                 # join_all is downstream of near, two steps away
        e >> after_elsewhere()

    run_id = engine.trigger("branch_and_join", {})
    ran = drain(engine)
    assert ran == ["route", "near", "middle", "join_all"]
    assert states_of(engine, run_id) == {
        "route": "succeeded", "near": "succeeded", "middle": "succeeded",
        "join_all": "succeeded", "elsewhere": "skipped", "after_elsewhere": "skipped"}
    assert run_of(engine, run_id)["state"] == "succeeded"


def test_a_branch_returning_a_tuple_follows_each_id_in_it(
        engine, registry):  # noqa: F811 - the engine fixture
    from qflow import task, workflow

    @task.branch
    def two_of_three() -> tuple:
        return ("left", "right")

    @task
    def left() -> str:
        return "l"

    @task
    def right() -> str:
        return "r"

    @task
    def centre() -> str:
        return "c"

    @workflow
    def tuple_branch():
        two_of_three() >> [left(), right(), centre()]

    run_id = engine.trigger("tuple_branch", {})
    assert sorted(drain(engine)) == ["left", "right", "two_of_three"]
    assert states_of(engine, run_id) == {"two_of_three": "succeeded", "left": "succeeded",
                                         "right": "succeeded", "centre": "skipped"}
    with engine.store.read() as conn:
        assert read.results(conn, run_id, ["two_of_three"]) == {
            "two_of_three": ["left", "right"]}
    assert run_of(engine, run_id)["state"] == "succeeded"
