"""When the subscriber reconciles a changed service: trailing-edge coalescing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from subscribers.subscriber import SubscriberSettings, due_at

S = SubscriberSettings()
Q, B, CAP = S.quiet_seconds, S.burst_quiet_seconds, S.max_delay_seconds


def reconciles(event_times: list[float]) -> list[float]:
    """Simulate the work queue of one service as the subscriber runs it: the times its
    reconciles run."""
    runs: list[float] = []
    first: float | None = None
    last = 0.0
    previous: float | None = None  # the last event before the previous reconcile
    churning = False

    def due() -> float:
        assert first is not None
        return due_at(first, last, Q, B, CAP, churning)

    for t in sorted(event_times):
        if first is not None and due() <= t:
            runs.append(due())
            first, previous = None, last
        if first is None:
            first = t
            churning = previous is not None and t - previous < B
        last = t
    if first is not None:
        runs.append(due())
    return runs


def test_an_isolated_change_waits_only_the_short_quiet_window() -> None:
    assert reconciles([10.0]) == [pytest.approx(10.0 + Q)]


def test_the_events_of_one_change_are_one_reconcile() -> None:
    # An export and its slices, a few milliseconds apart.
    assert reconciles([10.0, 10.004, 10.009]) == [pytest.approx(10.009 + Q)]


def test_a_rapid_burst_is_one_reconcile_of_its_last_state() -> None:
    burst = [10.0 + 0.003 * i for i in range(20)]
    assert reconciles(burst) == [pytest.approx(burst[-1] + B)]


def test_a_burst_with_pauses_longer_than_the_short_window_is_still_one_reconcile() -> None:
    # Updates 30 to 120 ms apart: once the burst has gone on for longer than quiet_seconds,
    # pauses longer than that do not end it.
    times = [10.0, 10.03, 10.06, 10.18, 10.21, 10.33, 10.36]
    assert reconciles(times) == [pytest.approx(10.36 + B)]


def test_a_service_that_never_pauses_is_reconciled_every_max_delay() -> None:
    times = [10.0 + 0.02 * i for i in range(250)]  # 5 s of events every 20 ms
    runs = reconciles(times)
    assert 5 <= len(runs) <= 6
    assert runs[0] == pytest.approx(10.0 + CAP)


def test_a_burst_that_pauses_early_writes_its_first_state_and_then_only_its_last() -> None:
    # The first update, a pause longer than quiet_seconds, then the rest of the burst: the
    # first state is written; the events after it belong to the same burst.
    times = [10.0, 10.17, 10.21, 10.27, 10.35, 10.4, 10.45, 10.52]
    assert reconciles(times) == [pytest.approx(10.0 + Q), pytest.approx(10.52 + B)]


def test_a_change_long_after_the_last_is_isolated_again() -> None:
    assert reconciles([10.0, 11.0]) == [pytest.approx(10.0 + Q), pytest.approx(11.0 + Q)]


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=60))
def test_every_change_is_reconciled_within_max_delay_and_after_its_events(
    times: list[float],
) -> None:
    runs = reconciles(times)
    for t in times:
        after = [r for r in runs if r >= t]
        assert after, "an event with no reconcile after it"
        assert after[0] - t <= CAP + 1e-9
