"""Fold the log into the clusterset's state.

Every subscriber folds the same ordered events, so every cluster holds the same state and
computes the same conflict winners. :class:`ClusterSetState` keeps, per key, the last event seen
on its subject; that is the whole state because events carry whole state.

Rules that keep folding safe:

* an envelope whose sequence is not above the last one seen on its subject is a redelivery and
  changes nothing (it is counted);
* an event whose ``cluster`` differs from its subject's cluster is refused and counted: a
  cluster speaks only for itself;
* the fold never reads a clock: time-dependent views (staleness) take ``now`` from the caller,
  and replay at event N passes event N's time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import msgspec

from engine import events as ev
from engine import subjects


class Envelope(NamedTuple):
    """One event as the log delivered it: its stream sequence, subject and storage time.

    A named tuple: one is made per event read, and it is the cheapest immutable record."""

    seq: int
    subject: str
    time: datetime
    event: ev.AnyEvent


@dataclass(slots=True)
class ClusterRecord:
    """What the log says about one member."""

    info: ev.ClusterJoined | None = None
    left: bool = False
    last_heartbeat: ev.Heartbeat | None = None
    last_heartbeat_at: datetime | None = None
    snapshot_epoch: int | None = None
    instances: dict[str, datetime] = field(default_factory=dict)
    """When each publisher instance claiming this cluster id last sent a heartbeat. A sliding
    observation for duplicate-id detection, not durable state: a last-per-subject bootstrap
    sees one instance until the next heartbeats, so it is left out of :meth:`snapshot`."""


@dataclass(slots=True)
class LeaseRecord:
    """The last lease event of one lease, across every cluster's subject of it.

    ``transitions`` is the fencing token the event carries: the number of acquisitions so far.
    """

    event: ev.LeaseAcquired | ev.LeaseReleased
    seq: int
    time: datetime
    transitions: int


@dataclass(slots=True)
class Counters:
    """Envelopes the fold did not apply, by why."""

    applied: int = 0
    redelivered: int = 0
    refused: int = 0


ServiceKey = tuple[str, str]


@dataclass(slots=True)
class ClusterSetState:
    """The folded state of one clusterset.

    ``exports[(ns, name)][cluster]`` is that cluster's current export of the service;
    ``slices[(ns, name)][cluster][slice]`` its current source EndpointSlices.
    """

    exports: dict[ServiceKey, dict[str, ev.ExportUpserted]] = field(default_factory=dict)
    slices: dict[ServiceKey, dict[str, dict[str, ev.SliceUpserted]]] = field(default_factory=dict)
    clusters: dict[str, ClusterRecord] = field(default_factory=dict)
    leases: dict[str, LeaseRecord] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    position: int = 0
    counters: Counters = field(default_factory=Counters)

    def snapshot(self) -> bytes:
        """A canonical encoding of the state (sorted keys): equal states give equal bytes."""
        doc = {
            "exports": {f"{k[0]}/{k[1]}": v for k, v in self.exports.items()},
            "slices": {f"{k[0]}/{k[1]}": v for k, v in self.slices.items()},
            "clusters": {
                k: {
                    "info": r.info,
                    "left": r.left,
                    "heartbeat": r.last_heartbeat,
                    "heartbeatAt": r.last_heartbeat_at,
                    "epoch": r.snapshot_epoch,
                }
                for k, r in self.clusters.items()
            },
            "leases": {
                k: {"event": r.event, "seq": r.seq, "time": r.time, "transitions": r.transitions}
                for k, r in self.leases.items()
            },
        }
        return msgspec.json.encode(doc, order="sorted")


def apply(state: ClusterSetState, env: Envelope) -> bool:
    """Fold one envelope into ``state``; return whether it changed anything."""
    last = state.last_seq.get(env.subject, 0)
    if env.seq <= last:
        state.counters.redelivered += 1
        return False
    try:
        parsed = subjects.parse(env.subject)
    except ValueError:
        state.counters.refused += 1
        return False
    event = env.event
    if event.cluster != parsed.cluster or not _fits(parsed, event):
        state.counters.refused += 1
        return False
    state.last_seq[env.subject] = env.seq
    state.position = max(state.position, env.seq)
    state.counters.applied += 1
    _mutate(state, parsed, env)
    return True


def fold(
    state: ClusterSetState, envelopes: list[Envelope] | tuple[Envelope, ...]
) -> ClusterSetState:
    """Fold many envelopes in order; returns ``state`` for chaining."""
    for env in envelopes:
        apply(state, env)
    return state


_KIND_OF: dict[type, str] = {
    ev.ExportUpserted: "export",
    ev.ExportWithdrawn: "export",
    ev.SliceUpserted: "slice",
    ev.SliceRemoved: "slice",
    ev.ClusterJoined: "cluster",
    ev.ClusterUpdated: "cluster",
    ev.ClusterLeft: "cluster",
    ev.Heartbeat: "heartbeat",
    ev.SnapshotComplete: "sync",
    ev.LeaseAcquired: "lease",
    ev.LeaseRenewed: "lease",
    ev.LeaseReleased: "lease",
}


def _fits(parsed: subjects.Parsed, event: ev.AnyEvent) -> bool:
    """An event must sit on the subject of the key it describes."""
    if _KIND_OF[type(event)] != parsed.kind:
        return False
    match event:
        case ev.ExportUpserted() | ev.ExportWithdrawn():
            return parsed.parts == (event.namespace, event.name)
        case ev.SliceUpserted() | ev.SliceRemoved():
            return parsed.parts == (event.namespace, event.service, event.name)
        case ev.LeaseAcquired() | ev.LeaseReleased():
            return parsed.parts == (event.name,)
        case _:
            return True


def _mutate(state: ClusterSetState, parsed: subjects.Parsed, env: Envelope) -> None:
    event = env.event
    cluster = parsed.cluster
    match event:
        case ev.ExportUpserted():
            state.exports.setdefault((event.namespace, event.name), {})[cluster] = event
        case ev.ExportWithdrawn():
            key = (event.namespace, event.name)
            by_cluster = state.exports.get(key)
            if by_cluster is not None:
                by_cluster.pop(cluster, None)
                if not by_cluster:
                    del state.exports[key]
        case ev.SliceUpserted():
            key = (event.namespace, event.service)
            state.slices.setdefault(key, {}).setdefault(cluster, {})[event.name] = event
        case ev.SliceRemoved():
            key = (event.namespace, event.service)
            per_cluster = state.slices.get(key, {})
            own = per_cluster.get(cluster)
            if own is not None:
                own.pop(event.name, None)
                if not own:
                    del per_cluster[cluster]
                if not per_cluster:
                    state.slices.pop(key, None)
        case ev.ClusterJoined():  # also ClusterUpdated
            rec = state.clusters.setdefault(cluster, ClusterRecord())
            rec.info = event
            rec.left = False
        case ev.ClusterLeft():
            # Membership only: the cluster's keys stay as their own subjects say (its publisher
            # tombstones them before leaving), so a last-per-subject bootstrap and a full
            # replay agree. The merge ignores clusters that left (engine.inventory.admitted).
            rec = state.clusters.setdefault(cluster, ClusterRecord())
            rec.left = True
            rec.info = None
        case ev.Heartbeat():
            rec = state.clusters.setdefault(cluster, ClusterRecord())
            rec.last_heartbeat = event
            rec.last_heartbeat_at = env.time
            if event.instance and event.stopping:
                rec.instances.pop(event.instance, None)  # a clean stop frees the id at once
            elif event.instance:
                rec.instances[event.instance] = env.time
        case ev.SnapshotComplete():
            state.clusters.setdefault(cluster, ClusterRecord()).snapshot_epoch = event.epoch
        case ev.LeaseAcquired() | ev.LeaseReleased():
            state.leases[event.name] = LeaseRecord(event, env.seq, env.time, event.token)
