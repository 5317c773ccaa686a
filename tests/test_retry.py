"""When failed attempts are retried, and after how long (pure)."""
from qflow import Fail
from qflow.core.retry import retry_in


def test_delays_grow_by_the_backoff_factor_and_stop_at_the_cap():
    options = {"retries": 5, "retry_delay": 2.0, "retry_backoff": 3.0, "max_retry_delay": 30}
    assert [retry_in(options, n, ValueError()) for n in range(1, 7)] == [2, 6, 18, 30, 30, None]


def test_no_retries_by_default_and_fail_is_never_retried():
    assert retry_in({}, 1, ValueError()) is None
    assert retry_in({"retries": 3}, 1, Fail("no")) is None
    assert retry_in({"retries": 3}, 1, ValueError()) == 0.0


def test_retry_on_limits_which_errors_are_retried():
    options = {"retries": 2, "retry_delay": 1}
    assert retry_in(options, 1, ConnectionError(), (OSError,)) == 1
    assert retry_in(options, 1, KeyError(), (OSError,)) is None


def test_jitter_spreads_each_delay_over_its_upper_half():
    options = {"retries": 1, "retry_delay": 10, "retry_jitter": True}
    delays = {retry_in(options, 1, ValueError()) for _ in range(50)}
    assert all(5 <= d <= 10 for d in delays) and len(delays) > 1


def test_a_resumed_task_gets_its_full_retry_budget_again():
    from qflow.core.records import Claimed
    options = {"retries": 2, "retry_delay": 1, "retry_backoff": 2}
    resumed = Claimed(1, "t", {}, options, "w", {}, None, {}, first_attempt=4)
    assert [retry_in(options, resumed.tries(n), ValueError()) for n in (4, 5, 6)] == [1, 2, None]
