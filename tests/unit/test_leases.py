"""The lease rules, from the candidate's point of view (its own monotonic clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core import events as ev
from engine.core import leases

T = leases.Timing(duration=15, renew_deadline=10, renew_interval=2, retry_interval=0.5)


def held(holder: str, token: int = 3, seq: int = 40, since: float = 100.0) -> leases.Observed:
    e = ev.LeaseAcquired(cluster="east", name="l", holder=holder, duration_seconds=15, token=token)
    return leases.Observed(seq, e, since)


def test_a_never_held_lease_is_acquired_at_once_with_token_one() -> None:
    a = leases.decide(leases.Observed(0, None, 0.0), "me", 0.0, T, None)
    assert (a.kind, a.expected_seq, a.token) == ("acquire", 0, 1)


def test_a_released_lease_is_acquired_at_once_with_the_next_token() -> None:
    rel = ev.LeaseReleased(cluster="west", name="l", holder="other", token=4)
    a = leases.decide(leases.Observed(9, rel, 50.0), "me", 50.0, T, None)
    assert (a.kind, a.expected_seq, a.token) == ("acquire", 9, 5)


def test_a_held_lease_is_taken_over_only_after_a_full_duration_without_change() -> None:
    obs = held("other", since=100.0)
    assert leases.decide(obs, "me", 114.9, T, None).kind == "wait"
    a = leases.decide(obs, "me", 115.0, T, None)
    assert (a.kind, a.expected_seq, a.token) == ("acquire", 40, 4)


def test_waiting_looks_again_no_later_than_the_retry_interval() -> None:
    a = leases.decide(held("other", since=100.0), "me", 101.0, T, None)
    assert a.kind == "wait" and a.at == pytest.approx(101.5)


def test_the_holder_renews_every_renew_interval_keeping_its_token() -> None:
    obs = held("me", token=7, since=100.0)
    assert leases.decide(obs, "me", 101.0, T, last_renew_sent=100.0).kind == "wait"
    a = leases.decide(obs, "me", 102.0, T, last_renew_sent=100.0)
    assert (a.kind, a.token, a.expected_seq) == ("renew", 7, 40)


def test_the_holder_steps_down_before_anyone_may_take_over() -> None:
    # The holder's tenure ends renew_deadline after it *sent* its last successful renewal;
    # others may take over duration after they *observed* it, which is later than sending.
    sent = 100.0
    assert leases.leader_until(sent, T) < sent + T.duration


@given(
    duration=st.floats(1, 100),
    deadline_frac=st.floats(0.1, 0.95),
    interval_frac=st.floats(0.05, 0.95),
)
def test_timing_accepts_only_interval_below_deadline_below_duration(
    duration: float, deadline_frac: float, interval_frac: float
) -> None:
    deadline = duration * deadline_frac
    interval = deadline * interval_frac
    t = leases.Timing(duration, deadline, interval)
    assert t.renew_interval < t.renew_deadline < t.duration
    with pytest.raises(ValueError, match="lease timing"):
        leases.Timing(duration, duration, interval)


@given(st.integers(0, 2**31 - 3))
def test_every_acquisition_takes_the_next_token(token: int) -> None:
    a = leases.decide(held("other", token=token, since=0.0), "me", 1000.0, T, None)
    assert a.token == token + 1
