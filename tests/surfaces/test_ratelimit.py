"""The per-user token bucket behind the prediction routes, on a clock the test moves."""

from __future__ import annotations

import pytest

from batchwatch_airflow.web.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_and_the_wait_until_the_next_token() -> None:
    clock = Clock()
    bucket = TokenBucket(per_second=2.0, burst=3, clock=clock)
    assert [bucket.take("ann") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("ann") == pytest.approx(0.5)
    clock.now += 0.25
    assert bucket.take("ann") == pytest.approx(0.25), "half a token back; a refused take spends nothing"
    clock.now += 0.25
    assert bucket.take("ann") == 0.0
    clock.now += 60
    assert [bucket.take("ann") for _ in range(4)][-1] > 0, "an idle user gets the burst back, never more"
    assert bucket.take("bob") == 0.0, "each user has a bucket of their own"


@pytest.mark.parametrize(("wait", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (30.0, "30")])
def test_retry_after_is_whole_seconds_and_at_least_one(wait: float, header: str) -> None:
    assert TokenBucket.retry_after(wait) == header


def test_a_limit_that_allows_nothing_is_refused_with_where_to_fix_it() -> None:
    with pytest.raises(ValueError, match=r"predictions_per_second > 0 .* fix \[batchwatch\] in airflow.cfg"):
        TokenBucket(per_second=0, burst=5)
