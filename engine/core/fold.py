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

from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NamedTuple, Self, TypeVar

import msgspec

from engine.core import events as ev
from engine.core import subjects


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

_E = TypeVar("_E", ev.ExportUpserted, ev.SliceUpserted)
_encode: Final = msgspec.msgpack.Encoder().encode


class Packed(MutableMapping[str, _E]):
    """A mapping of events kept packed (msgpack bytes), each decoded when it is read.

    The state holds the last event of every export and slice of the clusterset, and reads one
    service's at a time (to merge and plan it). Decoded, an endpoint costs ~400 bytes of
    Python objects (a struct, a tuple and a separate string for every address, zone and node
    name); packed, ~35. Reading decodes again (microseconds per event), so only the service
    being reconciled is ever decoded. Equality is by decoded content (``Mapping``'s).
    """

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    def _pack(self, value: _E) -> bytes:
        raise NotImplementedError

    def _unpack(self, data: bytes) -> _E:
        raise NotImplementedError

    def __getitem__(self, key: str) -> _E:
        return self._unpack(self._data[key])

    def __setitem__(self, key: str, value: _E) -> None:
        self._data[key] = self._pack(value)

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"

    def packed(self) -> dict[str, bytes]:
        """The packed events by key (a snapshot stores them as they are)."""
        return self._data

    @classmethod
    def of_packed(cls, data: dict[str, bytes]) -> Self:
        out = cls()
        out._data = data
        return out


_decode_export: Final = msgspec.msgpack.Decoder(ev.ExportUpserted).decode


class ExportsByCluster(Packed[ev.ExportUpserted]):
    """One service's current export by each cluster."""

    __slots__ = ()

    def _pack(self, value: ev.ExportUpserted) -> bytes:
        return _encode(value)

    def _unpack(self, data: bytes) -> ev.ExportUpserted:
        event: ev.ExportUpserted = _decode_export(data)
        return event


EndpointRow = tuple[
    tuple[str, ...], bool | None, bool | None, bool | None, str | None, str | None, str | None
]
"""The fields of :class:`~engine.core.events.Endpoint` in order, packed as an array: without
the field names an endpoint packs into about 35 bytes instead of 80. A new Endpoint field
needs a new row (and a new snapshot format): a unit test holds the two together."""


class _PackedSlice(msgspec.Struct, array_like=True, gc=False):
    cluster: str
    namespace: str
    service: str
    name: str
    address_type: str
    ports: tuple[ev.EndpointPort, ...]
    endpoints: list[EndpointRow]


_decode_slice: Final = msgspec.msgpack.Decoder(_PackedSlice).decode
_astuple: Final = msgspec.structs.astuple


class SlicesByName(Packed[ev.SliceUpserted]):
    """One cluster's current source EndpointSlices of one service, by slice name."""

    __slots__ = ()

    def _pack(self, value: ev.SliceUpserted) -> bytes:
        return _encode(
            _PackedSlice(
                value.cluster,
                value.namespace,
                value.service,
                value.name,
                value.address_type,
                value.ports,
                [_astuple(e) for e in value.endpoints],
            )
        )

    def _unpack(self, data: bytes) -> ev.SliceUpserted:
        p = _decode_slice(data)
        return ev.SliceUpserted(
            cluster=p.cluster,
            namespace=p.namespace,
            service=p.service,
            name=p.name,
            address_type=p.address_type,  # type: ignore[arg-type]  # packed from the event
            endpoints=tuple(ev.Endpoint(*row) for row in p.endpoints),
            ports=p.ports,
        )


@dataclass(slots=True)
class ClusterSetState:
    """The folded state of one clusterset.

    ``exports[(ns, name)][cluster]`` is that cluster's current export of the service;
    ``slices[(ns, name)][cluster][slice]`` its current source EndpointSlices. Both keep their
    events packed (:class:`Packed`): they are decoded when read.
    """

    exports: dict[ServiceKey, ExportsByCluster] = field(default_factory=dict)
    slices: dict[ServiceKey, dict[str, SlicesByName]] = field(default_factory=dict)
    clusters: dict[str, ClusterRecord] = field(default_factory=dict)
    leases: dict[str, LeaseRecord] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    position: int = 0
    counters: Counters = field(default_factory=Counters)

    def snapshot(self) -> bytes:
        """A canonical encoding of the state (sorted keys): equal states give equal bytes."""
        doc = {
            "exports": {f"{k[0]}/{k[1]}": dict(v) for k, v in self.exports.items()},
            "slices": {
                f"{k[0]}/{k[1]}": {c: dict(m) for c, m in v.items()} for k, v in self.slices.items()
            },
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


def refusal(subject: str, event: ev.Event) -> str | None:
    """Why ``event`` may not stand on ``subject`` (None: it may).

    An event must sit on the subject of the key it describes, written by the cluster it speaks
    for: a cluster speaks only for itself, and one key has one subject. Readers treat a refused
    event like one that does not decode: it never replaces the key's last usable state.
    """
    try:
        parsed = subjects.parse(subject)
    except ValueError:
        return "the subject is outside the grammar"
    kind, key_of, _ = _RULES[type(event)]
    if event.cluster != parsed.cluster:
        return f"the event speaks for cluster {event.cluster!r} on {parsed.cluster!r}'s subject"
    if kind != parsed.kind or (key_of is not None and key_of(event) != parsed.parts):
        return f"a {ev.tag_of(type(event))} event does not describe this subject's key"
    return None


def apply(state: ClusterSetState, env: Envelope) -> bool:
    """Fold one envelope into ``state``; return whether it changed anything."""
    subject = env.subject
    seq = env.seq
    if seq <= state.last_seq.get(subject, 0):
        state.counters.redelivered += 1
        return False
    try:
        parsed = subjects.parse(subject)
    except ValueError:
        state.counters.refused += 1
        return False
    event = env.event
    kind, key_of, mutate = _RULES[type(event)]
    if (
        event.cluster != parsed.cluster
        or kind != parsed.kind
        or (key_of is not None and key_of(event) != parsed.parts)
    ):
        state.counters.refused += 1  # see refusal()
        return False
    state.last_seq[subject] = seq
    state.position = max(state.position, seq)
    state.counters.applied += 1
    mutate(state, parsed.cluster, env)
    return True


def fold(
    state: ClusterSetState, envelopes: list[Envelope] | tuple[Envelope, ...]
) -> ClusterSetState:
    """Fold many envelopes in order; returns ``state`` for chaining."""
    for env in envelopes:
        apply(state, env)
    return state


def _export_upserted(state: ClusterSetState, cluster: str, env: Envelope) -> None:
    event: ev.ExportUpserted = env.event  # type: ignore[assignment]
    key = (event.namespace, event.name)
    by_cluster = state.exports.get(key)
    if by_cluster is None:
        by_cluster = state.exports[key] = ExportsByCluster()
    by_cluster[cluster] = event


def _export_withdrawn(state: ClusterSetState, cluster: str, env: Envelope) -> None:
    event: ev.ExportWithdrawn = env.event  # type: ignore[assignment]
    key = (event.namespace, event.name)
    by_cluster = state.exports.get(key)
    if by_cluster is not None:
        by_cluster.packed().pop(cluster, None)
        if not by_cluster:
            del state.exports[key]


def _slice_upserted(state: ClusterSetState, cluster: str, env: Envelope) -> None:
    event: ev.SliceUpserted = env.event  # type: ignore[assignment]
    key = (event.namespace, event.service)
    per_cluster = state.slices.setdefault(key, {})
    own = per_cluster.get(cluster)
    if own is None:
        own = per_cluster[cluster] = SlicesByName()
    own[event.name] = event


def _slice_removed(state: ClusterSetState, cluster: str, env: Envelope) -> None:
    event: ev.SliceRemoved = env.event  # type: ignore[assignment]
    key = (event.namespace, event.service)
    per_cluster = state.slices.get(key, {})
    own = per_cluster.get(cluster)
    if own is not None:
        own.packed().pop(event.name, None)
        if not own:
            del per_cluster[cluster]
        if not per_cluster:
            state.slices.pop(key, None)


def _cluster_joined(state: ClusterSetState, cluster: str, env: Envelope) -> None:
    # Also ClusterUpdated, a subclass.
    rec = state.clusters.setdefault(cluster, ClusterRecord())
    rec.info = env.event  # type: ignore[assignment]
    rec.left = False


def _cluster_left(state: ClusterSetState, cluster: str, env: Envelope) -> None:
    # Membership only: the cluster's keys stay as their own subjects say (its publisher
    # tombstones them before leaving), so a last-per-subject bootstrap and a full replay agree.
    # The merge ignores clusters that left (engine.inventory.admitted).
    rec = state.clusters.setdefault(cluster, ClusterRecord())
    rec.left = True
    rec.info = None


def _heartbeat(state: ClusterSetState, cluster: str, env: Envelope) -> None:
    event: ev.Heartbeat = env.event  # type: ignore[assignment]
    rec = state.clusters.setdefault(cluster, ClusterRecord())
    rec.last_heartbeat = event
    rec.last_heartbeat_at = env.time
    if event.instance and event.stopping:
        rec.instances.pop(event.instance, None)  # a clean stop frees the id at once
    elif event.instance:
        rec.instances[event.instance] = env.time


def _snapshot_complete(state: ClusterSetState, cluster: str, env: Envelope) -> None:
    event: ev.SnapshotComplete = env.event  # type: ignore[assignment]
    state.clusters.setdefault(cluster, ClusterRecord()).snapshot_epoch = event.epoch


def _lease(state: ClusterSetState, cluster: str, env: Envelope) -> None:
    # Acquired, renewed (a subclass of acquired) or released.
    event: ev.LeaseAcquired | ev.LeaseReleased = env.event  # type: ignore[assignment]
    state.leases[event.name] = LeaseRecord(event, env.seq, env.time, event.token)


_Mutator = Callable[[ClusterSetState, str, Envelope], None]
_KeyOf = Callable[[Any], tuple[str, ...]]


def _name_key(e: Any) -> tuple[str, ...]:
    return (e.namespace, e.name)


def _slice_key(e: Any) -> tuple[str, ...]:
    return (e.namespace, e.service, e.name)


def _lease_key(e: Any) -> tuple[str, ...]:
    return (e.name,)


# Per event type: the subject kind it must sit on, the key its subject must name (None: the
# subject names no object) and what it does to the state.
_RULES: dict[type, tuple[str, _KeyOf | None, _Mutator]] = {
    ev.ExportUpserted: ("export", _name_key, _export_upserted),
    ev.ExportWithdrawn: ("export", _name_key, _export_withdrawn),
    ev.SliceUpserted: ("slice", _slice_key, _slice_upserted),
    ev.SliceRemoved: ("slice", _slice_key, _slice_removed),
    ev.ClusterJoined: ("cluster", None, _cluster_joined),
    ev.ClusterUpdated: ("cluster", None, _cluster_joined),
    ev.ClusterLeft: ("cluster", None, _cluster_left),
    ev.Heartbeat: ("heartbeat", None, _heartbeat),
    ev.SnapshotComplete: ("sync", None, _snapshot_complete),
    ev.LeaseAcquired: ("lease", _lease_key, _lease),
    ev.LeaseRenewed: ("lease", _lease_key, _lease),
    ev.LeaseReleased: ("lease", _lease_key, _lease),
}
