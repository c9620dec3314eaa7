"""Staleness is judged on the log's clock; a silence of the log itself counts against no one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.core import events as ev
from engine.core import fold, inventory

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def member(last_heartbeat: datetime) -> fold.ClusterRecord:
    return fold.ClusterRecord(
        info=ev.ClusterJoined(cluster="a", clusterset="s"),
        last_heartbeat=ev.Heartbeat(cluster="a"),
        last_heartbeat_at=last_heartbeat,
    )


def test_a_member_silent_for_a_lease_of_the_log_clock_is_unknown() -> None:
    rec = member(T0)
    assert inventory.health(rec, T0 + LEASE, LEASE).status == "True"
    h = inventory.health(rec, T0 + LEASE + timedelta(seconds=1), LEASE)
    assert (h.status, h.reason) == ("Unknown", "HeartbeatLeaseExpired")


def test_after_the_log_itself_was_silent_every_member_gets_a_fresh_lease() -> None:
    rec = member(T0)
    back = T0 + timedelta(minutes=5)  # the hub was down; the first event after it
    assert inventory.health(rec, back, LEASE).status == "Unknown"
    assert inventory.health(rec, back, LEASE, since=back).status == "True"
    assert inventory.health(rec, back + LEASE, LEASE, since=back).status == "True"
    later = back + LEASE + timedelta(seconds=1)  # still silent a lease after the return
    assert inventory.health(rec, later, LEASE, since=back).status == "Unknown"


def test_admission_follows_the_same_rule() -> None:
    state = fold.ClusterSetState(clusters={"a": member(T0), "b": member(T0)})
    back = T0 + timedelta(minutes=5)
    assert inventory.admitted(state, back, LEASE, "withdraw") == frozenset()
    assert inventory.admitted(state, back, LEASE, "withdraw", since=back) == {"a", "b"}
    assert inventory.admitted(state, back, LEASE, "keep") == {"a", "b"}
