"""Unit tests of the state table and trigger rules (pure)."""
import pytest

from qflow.core.states import (
    RUN,
    SKIP,
    UPSTREAM,
    WAIT,
    TransitionError,
    Upstream,
    check_transition,
    decide,
    run_state,
)

# (succeeded, failed, skipped) of 2 parents -> decision per rule
CASES = {
    (2, 0, 0): dict(all_success=RUN, all_done=RUN, all_failed=SKIP, one_success=RUN,
                    one_failed=SKIP, none_failed=RUN, none_failed_min_one_success=RUN),
    (1, 1, 0): dict(all_success=UPSTREAM, all_done=RUN, all_failed=SKIP, one_success=RUN,
                    one_failed=RUN, none_failed=UPSTREAM, none_failed_min_one_success=UPSTREAM),
    (0, 2, 0): dict(all_success=UPSTREAM, all_done=RUN, all_failed=RUN, one_success=UPSTREAM,
                    one_failed=RUN, none_failed=UPSTREAM, none_failed_min_one_success=UPSTREAM),
    (1, 0, 1): dict(all_success=SKIP, all_done=RUN, all_failed=SKIP, one_success=RUN,
                    one_failed=SKIP, none_failed=RUN, none_failed_min_one_success=RUN),
    (0, 0, 2): dict(all_success=SKIP, all_done=RUN, all_failed=SKIP, one_success=SKIP,
                    one_failed=SKIP, none_failed=RUN, none_failed_min_one_success=SKIP),
    # One parent still running: decided early where the rule is already settled
    # (tests/test_trigger_rules.py has every combination and order).
    (1, 0, 0): dict(all_success=WAIT, all_done=WAIT, all_failed=SKIP, one_success=RUN,
                    one_failed=WAIT, none_failed=WAIT, none_failed_min_one_success=WAIT),
    (0, 1, 0): dict(all_success=UPSTREAM, all_done=WAIT, all_failed=WAIT, one_success=WAIT,
                    one_failed=RUN, none_failed=UPSTREAM,
                    none_failed_min_one_success=UPSTREAM),
}


@pytest.mark.parametrize("counts", list(CASES))
def test_trigger_rules_follow_airflow_semantics(counts):
    for rule, expected in CASES[counts].items():
        assert decide(rule, Upstream(2, *counts)) == expected, (rule, counts)


def test_always_and_roots_run_at_once():
    assert decide("always", Upstream(3)) == RUN
    assert decide("all_success", Upstream(0)) == RUN


def test_transitions_outside_the_table_are_refused():
    check_transition("queued", "running")
    with pytest.raises(TransitionError):
        check_transition("succeeded", "running")
    with pytest.raises(TransitionError):
        check_transition("pending", "running")


def test_a_run_fails_when_any_task_failed_whatever_the_leaves_say():
    assert run_state(failed=1, canceled=0) == "failed"
    assert run_state(failed=0, canceled=2) == "canceled"
    assert run_state(failed=0, canceled=0) == "succeeded"
