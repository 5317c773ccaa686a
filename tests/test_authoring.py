"""Unit tests of the authoring API and the DAG model (no DB, no broker)."""
from __future__ import annotations

import datetime as dt

import pytest

from qflow import task, workflow
from qflow.authoring import OptionError
from qflow.core.dag import REF_KEY, substitute
from qflow.errors import CycleError, ParamError, UserError


@task
def one() -> int:
    return 1


@task(retries=2, queue="etl")
def add(a: int, b: int = 0) -> int:
    return a + b


@task
def total(values: list[int], extra: dict | None = None) -> int:
    return sum(values) + sum((extra or {}).values())


def test_a_task_called_outside_a_workflow_is_a_plain_function():
    assert add(2, 3) == 5
    assert total([1, 2], {"x": 3}) == 6


def test_calls_in_a_body_become_nodes_with_data_edges(registry):
    @workflow
    def diamond():
        a = one()
        b = add(a, 1)
        c = add(a, 2)
        total([b, c])

    graph = diamond.expand()
    assert list(graph.nodes) == ["one", "add", "add__1", "total"]
    assert graph.edges == {("one", "add"), ("one", "add__1"), ("add", "total"),
                           ("add__1", "total")}
    assert graph.roots() == ["one"] and graph.leaves() == ["total"]
    assert graph.nodes["add"].queue == "etl"
    assert graph.nodes["add"].options == {"retries": 2}


def test_handles_nested_in_lists_and_dicts_are_replaced_by_parent_values(registry):
    @workflow
    def nested():
        leaves = [add(i) for i in range(3)]
        total(leaves, extra={"first": leaves[0], "k": 5})

    graph = nested.expand()
    node = graph.nodes["total"]
    assert node.args[0] == [{REF_KEY: "add"}, {REF_KEY: "add__1"}, {REF_KEY: "add__2"}]
    assert node.kwargs == {"extra": {"first": {REF_KEY: "add"}, "k": 5}}
    assert graph.parents("total") == ["add", "add__1", "add__2"]
    values = {"add": 0, "add__1": 1, "add__2": 2}
    assert total(*substitute(node.args, values), **substitute(node.kwargs, values)) == 8


def test_shift_operators_add_order_only_edges(registry):
    @workflow
    def ordered():
        a, b, c, d = one(), one(), one(), one()
        a >> b >> c
        d << c
        [a, b] >> d

    graph = ordered.expand()
    assert graph.edges == {("one", "one__1"), ("one__1", "one__2"), ("one__2", "one__3"),
                           ("one", "one__3"), ("one__1", "one__3")}
    assert graph.order() == ["one", "one__1", "one__2", "one__3"]


def test_a_cycle_is_refused_and_named(registry):
    @workflow
    def loop():
        a, b, c = one(), one(), one()
        a >> b >> c >> a

    with pytest.raises(CycleError, match=r"cycle in workflow: one -> one__1 -> one__2 -> one"):
        loop.expand()


def test_an_order_edge_against_the_call_order_is_kept_and_checked(registry):
    @workflow
    def backwards():
        first, second = one(), one()
        second >> first                # runs first after second: no cycle

    graph = backwards.expand()
    assert graph.edges == {("one__1", "one")}
    assert graph.order() == ["one__1", "one"]


def test_a_cycle_is_named_when_the_first_node_by_name_only_follows_it(registry):
    @task
    def a_leaf(x):
        return x

    @workflow
    def loop():
        b, c = one(), one()
        b >> c >> b
        a_leaf(c)                      # "a_leaf" sorts first, and has no child

    with pytest.raises(CycleError, match=r"cycle in workflow: one -> one__1 -> one$"):
        loop.expand()


def test_a_call_kept_from_another_expansion_is_refused_in_one_line(registry):
    kept = []

    @workflow
    def again():
        if kept:
            add(kept[-1], 1)           # made by the previous expansion, not by this one
        kept.append(one())

    @workflow
    def orders():
        one() >> kept[0]

    again.expand()
    for body in (again, orders):
        with pytest.raises(UserError, match=r"^workflow '\w+': <qflow node one> was made "
                                            r"by another workflow body, or an earlier run") as err:
            body.expand()
        assert "\n" not in str(err.value)


def test_the_body_shape_follows_the_run_parameters(registry):
    @workflow
    def wide(width: int = 2):
        total([add(i) for i in range(width)])

    assert len(wide.expand().nodes) == 3
    assert len(wide.expand(wide.resolve_params({"width": "10"})).nodes) == 11


def test_parameters_are_typed_from_annotations_and_defaults(registry):
    @workflow
    def typed(day: dt.date, n: int = 1, ratio=0.5, flags: list[str] = [], on: bool = False,
              opts: dict = {}, note: str | None = None):
        one()

    got = typed.resolve_params({"day": "2026-11-20", "n": "7", "ratio": "2", "flags": "a,b",
                                "on": "yes", "opts": '{"k": 1}', "note": "none"})
    assert got == {"day": "2026-11-20", "n": 7, "ratio": 2.0, "flags": ["a", "b"], "on": True,
                   "opts": {"k": 1}, "note": None}
    assert typed.resolve_params({"day": dt.date(2026, 1, 2)})["day"] == "2026-01-02"


@pytest.mark.parametrize("given, message", [
    ({"day": "d", "n": "x"}, r"parameter 'n' of workflow 'typed2': expected an int, got 'x'"),
    ({"bogus": "1"}, r"unknown parameter 'bogus' for workflow 'typed2' \(parameters: day, n\)"),
    ({"n": "1"}, r"workflow 'typed2' needs parameter 'day' \(str\): pass -p day=..."),
    ({"day": "d", "n": True}, r"expected an int, got True"),
])
def test_bad_parameters_are_refused_with_one_line(registry, given, message):
    @workflow
    def typed2(day: str, n: int = 1):
        one()

    with pytest.raises(ParamError, match=message) as info:
        typed2.resolve_params(given)
    assert "\n" not in str(info.value)


def test_unknown_decorator_options_fail_at_decoration_time():
    with pytest.raises(OptionError, match=r"@task on 'f': unknown option 'retry'"):
        @task(retry=3)
        def f():
            pass
    with pytest.raises(OptionError, match=r"@workflow on 'g': unknown option 'shedule'"):
        @workflow(shedule="@daily")
        def g():
            pass
    with pytest.raises(OptionError, match=r"unknown trigger_rule 'sometimes'"):
        @task(trigger_rule="sometimes")
        def h():
            pass
    with pytest.raises(OptionError, match=r"retries must be a number >= 0"):
        @task(retries=-1)
        def i():
            pass


def test_two_workflows_with_one_name_are_refused(registry):
    @workflow(name="same")
    def first():
        one()

    with pytest.raises(UserError, match=r"duplicate workflow name 'same'"):
        @workflow(name="same")
        def second():
            one()


def test_arguments_must_be_json(registry):
    @workflow
    def bad():
        add(object())

    with pytest.raises(UserError, match=r"node 'add': argument .* is not JSON-serialisable"):
        bad.expand()


def test_a_body_error_is_a_user_error(registry):
    @workflow
    def broken():
        raise KeyError("nope")

    with pytest.raises(UserError, match=r"workflow 'broken': body raised KeyError"):
        broken.expand()
