"""Events on the wire: round-trips, refusals, deterministic ids and golden files.

The JSON of an event is a public contract: third-party tools read it without our code, and old
events must keep decoding after the types evolve. The golden files under ``tests/golden/`` are
written by hand, the way such a tool would see them; a change that breaks one is a breaking
change of the log and needs a new tag.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import events as ev

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

fast = settings(max_examples=100, deadline=None)

# --- strategies ---------------------------------------------------------------------------

text = st.text(max_size=20)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_times = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.one_of(st.just(UTC), offsets),
)
str_maps = st.dictionaries(text, text, max_size=3)
optional_bool = st.none() | st.booleans()
optional_text = st.none() | text

ports = st.builds(
    ev.Port,
    port=ints,
    protocol=st.sampled_from(["TCP", "UDP", "SCTP"]),
    name=text,
    app_protocol=optional_text,
)
endpoint_ports = st.builds(
    ev.EndpointPort,
    port=st.none() | ints,
    protocol=st.sampled_from(["TCP", "UDP", "SCTP"]),
    name=text,
    app_protocol=optional_text,
)
endpoints = st.builds(
    ev.Endpoint,
    addresses=st.lists(text, max_size=3).map(tuple),
    ready=optional_bool,
    serving=optional_bool,
    terminating=optional_bool,
    hostname=optional_text,
    zone=optional_text,
    node_name=optional_text,
)
access_providers = st.builds(
    ev.AccessProvider, name=text, server=text, certificate_authority_data=optional_text
)


def tuples(elements: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(elements, max_size=3).map(tuple)


cluster_fields = {
    "cluster": text,
    "clusterset": text,
    "properties": str_maps,
    "kubernetes_version": text,
    "access_providers": tuples(access_providers),
    "display_name": optional_text,
}
lease_fields = {
    "cluster": text,
    "name": text,
    "holder": text,
    "duration_seconds": floats,
    "token": ints,
}

EVENT_STRATEGIES: dict[type[ev.Event], st.SearchStrategy[Any]] = {
    ev.ExportUpserted: st.builds(
        ev.ExportUpserted,
        cluster=text,
        namespace=text,
        name=text,
        uid=text,
        created=aware_times,
        validity=st.sampled_from(["Valid", "NoService", "InvalidServiceType"]),
        service_type=st.sampled_from(["ClusterSetIP", "Headless"]),
        ports=tuples(ports),
        session_affinity=st.sampled_from(["None", "ClientIP"]),
        session_affinity_timeout=st.none() | ints,
        internal_traffic_policy=st.none() | st.sampled_from(["Cluster", "Local"]),
        traffic_distribution=optional_text,
        ip_families=tuples(st.sampled_from(["IPv4", "IPv6"])),
        exported_labels=str_maps,
        exported_annotations=str_maps,
    ),
    ev.ExportWithdrawn: st.builds(ev.ExportWithdrawn, cluster=text, namespace=text, name=text),
    ev.SliceUpserted: st.builds(
        ev.SliceUpserted,
        cluster=text,
        namespace=text,
        service=text,
        name=text,
        address_type=st.sampled_from(["IPv4", "IPv6", "FQDN"]),
        endpoints=tuples(endpoints),
        ports=tuples(endpoint_ports),
    ),
    ev.SliceRemoved: st.builds(
        ev.SliceRemoved, cluster=text, namespace=text, service=text, name=text
    ),
    ev.ClusterJoined: st.builds(ev.ClusterJoined, **cluster_fields),
    ev.ClusterUpdated: st.builds(ev.ClusterUpdated, **cluster_fields),
    ev.ClusterLeft: st.builds(ev.ClusterLeft, cluster=text, clusterset=text),
    ev.Heartbeat: st.builds(
        ev.Heartbeat,
        cluster=text,
        health=st.sampled_from(["Healthy", "Unhealthy"]),
        reason=text,
        message=text,
        interval_seconds=floats,
    ),
    ev.SnapshotComplete: st.builds(ev.SnapshotComplete, cluster=text, epoch=ints),
    ev.LeaseAcquired: st.builds(ev.LeaseAcquired, **lease_fields),
    ev.LeaseRenewed: st.builds(ev.LeaseRenewed, **lease_fields),
    ev.LeaseReleased: st.builds(ev.LeaseReleased, cluster=text, name=text, holder=text, token=ints),
}

any_event = st.one_of(*EVENT_STRATEGIES.values())


def test_every_event_type_has_a_strategy_and_a_unique_tag() -> None:
    assert set(EVENT_STRATEGIES) == set(ev.EVENT_TYPES)
    tags = [ev.tag_of(t) for t in ev.EVENT_TYPES]
    assert len(set(tags)) == len(tags)
    assert all(tag.rsplit(".", 1)[-1].startswith("v") for tag in tags)


# --- round-trips --------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ev.EVENT_TYPES, ids=ev.tag_of)
@fast
@given(data=st.data())
def test_every_event_type_round_trips(event_type: type[ev.Event], data: st.DataObject) -> None:
    event = data.draw(EVENT_STRATEGIES[event_type])
    body = ev.encode(event)
    decoded = ev.decode(body)
    assert type(decoded) is event_type
    assert decoded == event
    assert ev.encode(decoded) == body
    assert json.loads(body)["type"] == ev.tag_of(event_type)


@fast
@given(any_event)
def test_encoding_is_plain_camel_case_json(event: ev.Event) -> None:
    doc = json.loads(ev.encode(event))
    assert "_" not in "".join(doc)  # no snake_case on the wire
    assert doc["cluster"] == event.cluster


def test_timestamps_keep_their_instant_and_offset() -> None:
    created = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    event = ev.ExportUpserted(cluster="a", namespace="n", name="s", uid="u", created=created)
    decoded = ev.decode(ev.encode(event))
    assert isinstance(decoded, ev.ExportUpserted)
    assert decoded.created == created
    assert decoded.created.utcoffset() == timedelta(hours=2)


# --- refusals -----------------------------------------------------------------------------


def _export_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "export.upserted.v1",
        "cluster": "east",
        "namespace": "shop",
        "name": "cart",
        "uid": "0b6c",
        "created": "2026-05-01T10:00:00Z",
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not ...}


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"type": "export.upserted.v9", "cluster": "east"}, id="unknown-version"),
        pytest.param({"type": "nonsense", "cluster": "east"}, id="unknown-tag"),
        pytest.param({"cluster": "east"}, id="no-tag"),
        pytest.param({"type": 1, "cluster": "east"}, id="tag-not-a-string"),
        pytest.param(_export_doc(cluster=...), id="missing-cluster"),
        pytest.param(_export_doc(created=...), id="missing-created"),
        pytest.param(_export_doc(cluster=7), id="cluster-not-a-string"),
        pytest.param(_export_doc(created="yesterday"), id="created-not-a-time"),
        pytest.param(_export_doc(created="2026-05-01T10:00:00"), id="created-without-offset"),
        pytest.param(_export_doc(validity="Maybe"), id="validity-not-in-enum"),
        pytest.param(_export_doc(serviceType="NodePort"), id="type-not-in-enum"),
        pytest.param(_export_doc(ports=[{"port": "80"}]), id="port-not-an-int"),
        pytest.param(_export_doc(ports=[{"port": 80, "protocol": "ICMP"}]), id="bad-protocol"),
        pytest.param(_export_doc(ports={"port": 80}), id="ports-not-a-list"),
        pytest.param(_export_doc(exportedLabels={"a": 1}), id="label-value-not-a-string"),
        pytest.param(_export_doc(exportedLabels=["a"]), id="labels-not-a-map"),
        pytest.param(_export_doc(sessionAffinityTimeout=1.5), id="timeout-not-an-int"),
        pytest.param(
            {"type": "heartbeat.v1", "cluster": "east", "health": "Fine"}, id="bad-health"
        ),
        pytest.param(
            {"type": "heartbeat.v1", "cluster": "east", "intervalSeconds": "10"},
            id="interval-not-a-number",
        ),
        pytest.param({"type": "sync.complete.v1", "cluster": "east"}, id="missing-epoch"),
        pytest.param(
            {"type": "sync.complete.v1", "cluster": "east", "epoch": True}, id="epoch-a-bool"
        ),
        pytest.param(
            {
                "type": "slice.upserted.v1",
                "cluster": "east",
                "namespace": "shop",
                "service": "cart",
                "name": "cart-1",
                "addressType": "IPv5",
            },
            id="bad-address-type",
        ),
        pytest.param([], id="not-an-object"),
        pytest.param("export.upserted.v1", id="a-string"),
        pytest.param(None, id="null"),
    ],
)
def test_wrong_shapes_raise_a_validation_error(doc: Any) -> None:
    with pytest.raises(msgspec.ValidationError):
        ev.decode(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"not json", b"\xff\xfe\x00", b'{"type": "heartbeat.v1", "cluster": "a"} x'],
)
def test_garbage_bytes_raise_a_decode_error(body: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        ev.decode(body)


def test_oversized_events_are_refused_before_parsing() -> None:
    body = ev.encode(ev.Heartbeat(cluster="a", message="x" * ev.MAX_EVENT_BYTES))
    assert len(body) > ev.MAX_EVENT_BYTES
    with pytest.raises(msgspec.ValidationError, match="exceeds"):
        ev.decode(body)


def test_an_event_of_exactly_the_limit_still_decodes() -> None:
    overhead = len(ev.encode(ev.Heartbeat(cluster="a", message="x"))) - 1
    body = ev.encode(ev.Heartbeat(cluster="a", message="x" * (ev.MAX_EVENT_BYTES - overhead)))
    assert len(body) == ev.MAX_EVENT_BYTES
    assert isinstance(ev.decode(body), ev.Heartbeat)


def test_unknown_fields_are_ignored_so_newer_writers_stay_readable() -> None:
    decoded = ev.decode(
        json.dumps(_export_doc(futureField={"x": 1}, ports=[{"port": 80, "newer": 1}])).encode()
    )
    assert isinstance(decoded, ev.ExportUpserted)
    assert decoded.ports == (ev.Port(port=80),)


# --- event ids ----------------------------------------------------------------------------

SUBJECT = "mcsync.prod.east.export.shop.cart"
BODY = ev.encode(
    ev.ExportUpserted(
        cluster="east",
        namespace="shop",
        name="cart",
        uid="u",
        created=datetime(2026, 5, 1, tzinfo=UTC),
    )
)


def test_event_id_is_deterministic_and_short_hex() -> None:
    first = ev.event_id(SUBJECT, 41, BODY)
    assert first == ev.event_id(SUBJECT, 41, BODY)
    assert len(first) == 32
    assert int(first, 16) >= 0


@pytest.mark.parametrize(
    ("subject", "previous_seq", "body"),
    [
        pytest.param("mcsync.prod.west.export.shop.cart", 41, BODY, id="other-subject"),
        pytest.param(SUBJECT, 42, BODY, id="other-previous-seq"),
        pytest.param(SUBJECT, 0, BODY, id="first-on-subject"),
        pytest.param(SUBJECT, 41, BODY + b" ", id="other-body"),
        pytest.param(SUBJECT, 41, b"", id="empty-body"),
    ],
)
def test_event_id_changes_with_subject_previous_sequence_and_body(
    subject: str, previous_seq: int, body: bytes
) -> None:
    assert ev.event_id(subject, previous_seq, body) != ev.event_id(SUBJECT, 41, BODY)


@fast
@given(st.text(), st.integers(0, 2**64), st.binary(), st.text(), st.integers(0, 2**64), st.binary())
def test_event_ids_differ_when_any_input_differs(
    s1: str, q1: int, b1: bytes, s2: str, q2: int, b2: bytes
) -> None:
    if "\0" in s1 or "\0" in s2:  # subjects never hold NUL (escape turns it into ~00)
        return
    same_inputs = (s1, q1, b1) == (s2, q2, b2)
    assert (ev.event_id(s1, q1, b1) == ev.event_id(s2, q2, b2)) == same_inputs


# --- golden files -------------------------------------------------------------------------

GOLDEN_FILES = sorted(GOLDEN.glob("*.json"))


def test_there_is_one_golden_file_per_event_type() -> None:
    assert {p.name for p in GOLDEN_FILES} == {f"{ev.tag_of(t)}.json" for t in ev.EVENT_TYPES}


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_golden_events_decode_to_their_type_and_re_encode_equal(path: Path) -> None:
    raw = path.read_bytes()
    decoded = ev.decode(raw)
    assert ev.tag_of(type(decoded)) == path.stem
    assert json.loads(ev.encode(decoded)) == json.loads(raw)


def test_golden_export_reads_as_a_third_party_tool_would_expect() -> None:
    decoded = ev.decode((GOLDEN / "export.upserted.v1.json").read_bytes())
    assert isinstance(decoded, ev.ExportUpserted)
    assert decoded.created == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    assert decoded.service_type == "ClusterSetIP"  # the default, omitted on the wire
    assert decoded.validity == "Valid"
    assert [(p.name, p.protocol, p.port, p.app_protocol) for p in decoded.ports] == [
        ("http", "TCP", 80, "http"),
        ("dns", "UDP", 53, None),
        ("grpc", "TCP", 9090, "kubernetes.io/h2c"),
    ]
    assert decoded.session_affinity == "ClientIP"
    assert decoded.session_affinity_timeout == 10800
