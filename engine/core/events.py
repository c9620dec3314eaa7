"""The events of the log: one tagged union of frozen, versioned structs.

Events are *state-carrying*: each one holds the whole current state of its key (one exported
service, one source EndpointSlice, one cluster), so the last event on a subject is the current
state of that key and a reader that starts at ``LAST_PER_SUBJECT`` needs nothing older.

Schema evolution follows msgspec's rules: a new field gets a default; a field is never retyped or
renamed; a breaking change is a new tag (``...v2``) plus an upcaster in :func:`decode`. Golden
events under ``tests/golden/`` must keep decoding.

The JSON field names are camelCase, like the Kubernetes objects they describe.
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

ServiceType = Literal["ClusterSetIP", "Headless"]
Validity = Literal["Valid", "NoService", "InvalidServiceType"]
Protocol = Literal["TCP", "UDP", "SCTP"]
AddressType = Literal["IPv4", "IPv6", "FQDN"]
Health = Literal["Healthy", "Unhealthy"]
# A timestamp must carry its offset: naive and aware datetimes cannot be compared, so one naive
# ``created`` would break the precedence sort of every subscriber.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class Port(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True, gc=False):
    """One port of an exported Service, as the ServiceImport exposes it."""

    port: int
    protocol: Protocol = "TCP"
    name: str = ""
    app_protocol: str | None = None


class EndpointPort(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True, gc=False):
    """One port of an EndpointSlice: the backend (target) port, named like the Service port."""

    port: int | None = None
    protocol: Protocol = "TCP"
    name: str = ""
    app_protocol: str | None = None


class Endpoint(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True, gc=False):
    """One endpoint of a source EndpointSlice (the fields MCS and CoreDNS read)."""

    addresses: tuple[str, ...]
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None
    hostname: str | None = None
    zone: str | None = None
    node_name: str | None = None


class Event(
    msgspec.Struct, frozen=True, tag_field="type", rename="camel", omit_defaults=True, gc=False
):
    """Base of every event. ``cluster`` is the writer and must match the subject's cluster.

    Events are immutable and never part of a reference cycle, so the garbage collector does not
    track them (``gc=False``): a large folded state costs no collector time."""

    cluster: str


# --- exports -------------------------------------------------------------------------------


class ExportUpserted(Event, frozen=True, tag="export.upserted.v1"):
    """A cluster exports ``namespace/name`` (or tries to): the whole exported state.

    ``validity`` other than ``Valid`` means the ServiceExport exists but exports nothing: the
    Service is missing (``NoService``) or of a type that cannot be exported
    (``InvalidServiceType``). Then the service fields are empty.
    """

    namespace: str
    name: str
    uid: str
    created: AwareDatetime
    validity: Validity = "Valid"
    service_type: ServiceType = "ClusterSetIP"
    ports: tuple[Port, ...] = ()
    session_affinity: str = "None"
    session_affinity_timeout: int | None = None
    internal_traffic_policy: str | None = None
    traffic_distribution: str | None = None
    ip_families: tuple[str, ...] = ()
    exported_labels: dict[str, str] = {}
    exported_annotations: dict[str, str] = {}


class ExportWithdrawn(Event, frozen=True, tag="export.withdrawn.v1"):
    """The ServiceExport is gone: the cluster no longer exports ``namespace/name``."""

    namespace: str
    name: str


# --- endpoint slices -----------------------------------------------------------------------


class SliceUpserted(Event, frozen=True, tag="slice.upserted.v1"):
    """One source EndpointSlice of an exported Service, whole."""

    namespace: str
    service: str
    name: str
    address_type: AddressType
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()


class SliceRemoved(Event, frozen=True, tag="slice.removed.v1"):
    """The source EndpointSlice is gone, or its Service is no longer exported."""

    namespace: str
    service: str
    name: str


# --- cluster lifecycle ---------------------------------------------------------------------


class AccessProvider(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True, gc=False):
    """How a consumer reaches the member's API server (ClusterProfile ``accessProviders``)."""

    name: str
    server: str
    certificate_authority_data: str | None = None


class ClusterJoined(Event, frozen=True, tag="cluster.joined.v1"):
    """The cluster is a member of the clusterset, with its properties and version."""

    clusterset: str
    properties: dict[str, str] = {}
    kubernetes_version: str = ""
    access_providers: tuple[AccessProvider, ...] = ()
    display_name: str | None = None
    observed: AwareDatetime | None = None
    """When the publisher read these properties from the member (ClusterProfile
    ``lastObservedTime``)."""
    reads: tuple[str, ...] = ()
    """The event tags this member's mcsync reads. A writer uses a newer version of an event only
    once every member lists it (:mod:`engine.core.evolution`); empty from members older than this
    field, which read the ``v1`` tags."""


class ClusterUpdated(ClusterJoined, frozen=True, tag="cluster.updated.v1"):
    """Properties, version or access of a member changed (same fields as joined)."""


class ClusterLeft(Event, frozen=True, tag="cluster.left.v1"):
    """The cluster left the clusterset: its exports and endpoints are withdrawn everywhere."""

    clusterset: str


class Heartbeat(Event, frozen=True, tag="heartbeat.v1"):
    """The member is alive; ``health`` is its control plane's readiness.

    ``instance`` identifies the publisher process, so two publishers claiming one cluster id
    are told apart.
    """

    health: Health = "Healthy"
    reason: str = ""
    message: str = ""
    interval_seconds: float = 10.0
    instance: str = ""
    stopping: bool = False
    """The last heartbeat of a publisher that is shutting down: its id is free at once."""


class SnapshotComplete(Event, frozen=True, tag="sync.complete.v1"):
    """The publisher finished its initial list for ``epoch``: its keys are all current."""

    epoch: int


# --- leases --------------------------------------------------------------------------------


class LeaseAcquired(Event, frozen=True, tag="lease.acquired.v1"):
    """``holder`` in ``cluster`` took lease ``name``; ``token`` is the fencing token."""

    name: str
    holder: str
    duration_seconds: float
    token: int


class LeaseRenewed(LeaseAcquired, frozen=True, tag="lease.renewed.v1"):
    """The holder renewed the lease (token unchanged)."""


class LeaseReleased(Event, frozen=True, tag="lease.released.v1"):
    """The holder gave the lease up; anyone may acquire it at once."""

    name: str
    holder: str
    token: int


AnyEvent = (
    ExportUpserted
    | ExportWithdrawn
    | SliceUpserted
    | SliceRemoved
    | ClusterJoined
    | ClusterUpdated
    | ClusterLeft
    | Heartbeat
    | SnapshotComplete
    | LeaseAcquired
    | LeaseRenewed
    | LeaseReleased
)

EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    ExportUpserted,
    ExportWithdrawn,
    SliceUpserted,
    SliceRemoved,
    ClusterJoined,
    ClusterUpdated,
    ClusterLeft,
    Heartbeat,
    SnapshotComplete,
    LeaseAcquired,
    LeaseRenewed,
    LeaseReleased,
)

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(AnyEvent)
decode_sized: Final = _decoder.decode
""":func:`decode` for a caller that has already checked the size against MAX_EVENT_BYTES."""

MAX_EVENT_BYTES: Final = 1024 * 1024


@functools.cache
def tag_of(event_type: type[Event]) -> str:
    """The wire tag (``type`` field, CloudEvents ``ce-type`` suffix) of an event class."""
    return str(event_type.__struct_config__.tag)


def encode(event: Event) -> bytes:
    """Encode an event as JSON."""
    return _encoder.encode(event)


def decode(data: bytes) -> AnyEvent:
    """Decode one event; raises ``msgspec.ValidationError`` or ``msgspec.DecodeError``."""
    if len(data) > MAX_EVENT_BYTES:
        raise msgspec.ValidationError(f"event of {len(data)} bytes exceeds {MAX_EVENT_BYTES}")
    event: AnyEvent = _decoder.decode(data)
    return event


_TAG = re.compile(r"[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*\.v[0-9]+")
_KNOWN_TAGS: Final = frozenset(tag_of(t) for t in EVENT_TYPES)


def unknown_tag(data: bytes) -> str | None:
    """The ``type`` of a body that is a JSON object tagged with a well-formed tag this reader
    does not know (``export.upserted.v2`` from a newer writer); None for anything else."""
    try:
        head = _probe.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    tag = head.type
    if isinstance(tag, str) and tag not in _KNOWN_TAGS and _TAG.fullmatch(tag):
        return tag
    return None


class _Tagged(msgspec.Struct):
    type: object = None


_probe: Final = msgspec.json.Decoder(_Tagged)


def event_id(subject: str, previous_seq: int, body: bytes) -> str:
    """A deterministic id for an append: what it says, where, and what it follows.

    Re-publishing the same event after a crash gives the same id (JetStream deduplicates it);
    returning to an earlier state later follows a different sequence, so it is a new id.
    """
    h = hashlib.sha256()
    h.update(subject.encode())
    h.update(b"\0")
    h.update(str(previous_seq).encode())
    h.update(b"\0")
    h.update(body)
    return h.hexdigest()[:32]
