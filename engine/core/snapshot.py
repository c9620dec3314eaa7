"""A durable snapshot of the folded state and the stream position it reflects.

A restarted subscriber that bootstraps from the log re-reads and re-folds every live key: its
cost grows with the clusterset, not with what changed while it was down. With a snapshot it
loads the state as it was at sequence ``position`` and reads only the events after it.

A snapshot is trusted only after :func:`verify`: the bytes match their checksum, the format is
this reader's, it was taken from this clusterset's stream (the same stream, not one deleted and
created again under the same name), and the stream still holds every event after the position
(its first sequence is not beyond ``position + 1``) and has not gone backwards (its last
sequence is not below ``position``). Anything else is a reason, and the caller bootstraps in
full.

Layout: a magic line, one JSON header line (readable with ``head -2``), then the state as
msgpack. Pure: no I/O here; the subscriber reads and writes the bytes.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Final

import msgspec

from engine.core import events as ev
from engine.core import fold

MAGIC: Final = b"mcsync-state\n"
FORMAT: Final = 1
"""The layout of the body; a reader refuses any other (and bootstraps in full)."""


class Identity(msgspec.Struct, frozen=True, rename="camel"):
    """Which log a snapshot belongs to."""

    clusterset: str
    stream: str
    stream_created: str
    """The stream's creation time as the server reports it: a stream deleted and created again
    under the same name is another log, whose sequences mean other events."""


class Header(msgspec.Struct, frozen=True, rename="camel"):
    format: int
    identity: Identity
    position: int
    """The last stream sequence folded in; every event up to it is reflected."""
    log_time: datetime | None
    """The storage time of the newest event folded in (the subscriber's log clock)."""
    keys: int
    sha256: str
    """Of the body."""


class _Cluster(msgspec.Struct, array_like=True, gc=False):
    cluster: str
    info: ev.AnyEvent | None
    left: bool
    heartbeat: ev.AnyEvent | None
    heartbeat_at: datetime | None
    epoch: int | None


class _Lease(msgspec.Struct, array_like=True, gc=False):
    event: ev.AnyEvent
    seq: int
    time: datetime
    transitions: int


class _Body(msgspec.Struct, array_like=True, gc=False):
    exports: list[tuple[str, str, dict[str, bytes]]]
    """(namespace, name, {cluster: packed export}): the state's packed events as they are."""
    slices: list[tuple[str, str, str, dict[str, bytes]]]
    """(namespace, service, cluster, {slice: packed slice})."""
    clusters: list[_Cluster]
    leases: list[_Lease]
    last_seq: dict[str, int]
    position: int
    applied: int
    redelivered: int
    refused: int


_encoder: Final = msgspec.msgpack.Encoder()
_decode_body: Final = msgspec.msgpack.Decoder(_Body).decode
_decode_header: Final = msgspec.json.Decoder(Header).decode


class Rejected(Exception):
    """A snapshot that must not be used; ``reason`` is one of ``damaged``, ``format``,
    ``foreign``, ``stream-recreated``, ``truncated`` (events after the position are gone),
    ``ahead`` (the stream is behind the position)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def encode(state: fold.ClusterSetState, identity: Identity, log_time: datetime | None) -> bytes:
    """The snapshot of ``state`` (it must reflect every event up to ``state.position``)."""
    body = _Body(
        exports=[(ns, name, m.packed()) for (ns, name), m in state.exports.items()],
        slices=[
            (ns, service, cluster, own.packed())
            for (ns, service), per_cluster in state.slices.items()
            for cluster, own in per_cluster.items()
        ],
        clusters=[
            _Cluster(c, r.info, r.left, r.last_heartbeat, r.last_heartbeat_at, r.snapshot_epoch)
            for c, r in state.clusters.items()
        ],
        leases=[_Lease(r.event, r.seq, r.time, r.transitions) for r in state.leases.values()],
        last_seq=state.last_seq,
        position=state.position,
        applied=state.counters.applied,
        redelivered=state.counters.redelivered,
        refused=state.counters.refused,
    )
    data = _encoder.encode(body)
    header = Header(
        FORMAT,
        identity,
        state.position,
        log_time,
        len(state.last_seq),
        hashlib.sha256(data).hexdigest(),
    )
    return MAGIC + msgspec.json.encode(header) + b"\n" + data


def read_header(blob: bytes) -> tuple[Header, memoryview]:
    """The header and the body, unchecked; :class:`Rejected` ("damaged") if unreadable."""
    if not blob.startswith(MAGIC):
        raise Rejected("damaged", "not an mcsync state snapshot")
    end = blob.find(b"\n", len(MAGIC))
    if end < 0:
        raise Rejected("damaged", "the header is cut off")
    try:
        header = _decode_header(blob[len(MAGIC) : end])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Rejected("damaged", f"unreadable header: {exc}") from exc
    return header, memoryview(blob)[end + 1 :]


def verify(
    header: Header, body: memoryview | bytes, identity: Identity, first_seq: int, last_seq: int
) -> None:
    """Raise :class:`Rejected` unless the snapshot may be resumed on this stream, whose
    messages now run from ``first_seq`` to ``last_seq``."""
    if header.format != FORMAT:
        raise Rejected("format", f"format {header.format}, this reader knows {FORMAT}")
    if hashlib.sha256(body).hexdigest() != header.sha256:
        raise Rejected("damaged", "the checksum does not match")
    mine, theirs = identity, header.identity
    if (mine.clusterset, mine.stream) != (theirs.clusterset, theirs.stream):
        raise Rejected("foreign", f"taken from {theirs.stream} of clusterset {theirs.clusterset}")
    if mine.stream_created != theirs.stream_created:
        raise Rejected(
            "stream-recreated",
            f"the stream was created at {mine.stream_created}, the snapshot's at "
            f"{theirs.stream_created}",
        )
    if first_seq > header.position + 1:
        raise Rejected(
            "truncated",
            f"the stream starts at {first_seq}, events after {header.position} are gone",
        )
    if last_seq < header.position:
        raise Rejected("ahead", f"the stream ends at {last_seq}, before {header.position}")


def decode(body: memoryview | bytes) -> fold.ClusterSetState:
    """The state of a verified snapshot's body."""
    try:
        doc = _decode_body(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Rejected("damaged", f"unreadable body: {exc}") from exc
    state = fold.ClusterSetState(
        last_seq=doc.last_seq,
        position=doc.position,
        counters=fold.Counters(doc.applied, doc.redelivered, doc.refused),
    )
    for ns, name, by_cluster in doc.exports:
        state.exports[(ns, name)] = fold.ExportsByCluster.of_packed(by_cluster)
    for ns, service, cluster, by_name in doc.slices:
        state.slices.setdefault((ns, service), {})[cluster] = fold.SlicesByName.of_packed(by_name)
    for c in doc.clusters:
        if not _optional(c.info, ev.ClusterJoined) or not _optional(c.heartbeat, ev.Heartbeat):
            raise Rejected("damaged", f"cluster record {c.cluster} holds the wrong events")
        state.clusters[c.cluster] = fold.ClusterRecord(
            info=c.info,  # type: ignore[arg-type]  # checked just above
            left=c.left,
            last_heartbeat=c.heartbeat,  # type: ignore[arg-type]
            last_heartbeat_at=c.heartbeat_at,
            snapshot_epoch=c.epoch,
        )
    for lease in doc.leases:
        event = lease.event
        if not isinstance(event, ev.LeaseAcquired | ev.LeaseReleased):
            raise Rejected("damaged", "a lease record holds another event")
        state.leases[event.name] = fold.LeaseRecord(event, lease.seq, lease.time, lease.transitions)
    return state


def _optional(event: ev.AnyEvent | None, kind: type) -> bool:
    return event is None or isinstance(event, kind)
