"""Cross-cluster leader leases: the pure rules.

A lease is one sequence of events across every cluster's subject of it
(``mcsync.<set>.<cluster>.lease.<name>``): every acquire, renew and release is appended with a
compare-and-set on the last sequence of the wildcard ``mcsync.<set>.*.lease.<name>``, so of two
candidates acting on the same observation exactly one succeeds, while each cluster still writes
only its own subjects.

Rules (all times are the candidate's own monotonic clock; nothing compares clocks across
clusters):

* a candidate may acquire a free lease (never held, or released) at once;
* it may take a held lease over only after it has *observed* no new lease event for the lease
  duration, counted from when it first saw the last one;
* the holder renews every ``renew_interval``; it counts its tenure from the moment it *sent*
  the acquire or renew that succeeded (which is before anyone could observe it), and steps down
  at ``sent + renew_deadline`` unless a later renewal succeeded; ``renew_deadline`` is below the
  duration, so the holder stops before any other candidate may take over, with margin for
  clock-rate differences;
* the fencing token is the number of acquisitions so far (the previous token plus one), carried
  in the events: it increases strictly with every change of holder and fits in an int32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.core import events as ev

ActionKind = Literal["acquire", "renew", "wait"]


@dataclass(frozen=True, slots=True)
class Timing:
    """Lease timing, in seconds. ``renew_interval < renew_deadline < duration``."""

    duration: float = 15.0
    renew_deadline: float = 10.0
    renew_interval: float = 2.0
    retry_interval: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.renew_interval < self.renew_deadline < self.duration:
            raise ValueError(
                "lease timing needs 0 < renew_interval < renew_deadline < duration, got "
                f"{self.renew_interval}, {self.renew_deadline}, {self.duration}"
            )


@dataclass(frozen=True, slots=True)
class Observed:
    """The last lease event a candidate has seen, and when (its monotonic clock)."""

    seq: int
    event: ev.LeaseAcquired | ev.LeaseReleased | None
    since: float


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    expected_seq: int = 0
    token: int = 0
    at: float = 0.0
    """For ``wait``: when to look again."""


def holder_of(obs: Observed) -> str | None:
    """The holder identity of an observed lease (None when free)."""
    if isinstance(obs.event, ev.LeaseAcquired):
        return obs.event.holder
    return None


def token_of(obs: Observed) -> int:
    return obs.event.token if obs.event is not None else 0


def decide(
    obs: Observed, me: str, now: float, timing: Timing, last_renew_sent: float | None
) -> Action:
    """What candidate ``me`` should do next."""
    holder = holder_of(obs)
    if holder is None:
        return Action("acquire", obs.seq, token_of(obs) + 1)
    if holder == me:
        due = (last_renew_sent or obs.since) + timing.renew_interval
        if now >= due:
            return Action("renew", obs.seq, token_of(obs))
        return Action("wait", at=due)
    expires = obs.since + timing.duration
    if now >= expires:
        return Action("acquire", obs.seq, token_of(obs) + 1)
    return Action("wait", at=min(expires, now + timing.retry_interval))


def leader_until(sent: float, timing: Timing) -> float:
    """The holder's tenure ends here unless a later renewal succeeds."""
    return sent + timing.renew_deadline
