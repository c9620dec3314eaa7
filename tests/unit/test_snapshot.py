"""The state snapshot of the core: what it encodes comes back the same, and a snapshot that does
not fit the stream as it is now is refused with its reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args

import msgspec
import pytest

from engine.core import events as ev
from engine.core import fold, snapshot, subjects
from engine.core.fold import Envelope

CLUSTERS = ("cluster-1", "cluster-2")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
IDENTITY = snapshot.Identity("s", "MCSYNC_S", "2026-01-01T00:00:00+00:00")
RECREATED = snapshot.Identity("s", "MCSYNC_S", "2026-02-01T00:00:00+00:00")


def export_event(cluster: str, name: str) -> ev.ExportUpserted:
    return ev.ExportUpserted(
        cluster=cluster,
        namespace="ns",
        name=name,
        uid=f"u-{cluster}",
        created=T0,
        ports=(ev.Port(port=80, name="http"),),
    )


def a_slice(cluster: str, name: str, version: int) -> ev.SliceUpserted:
    return ev.SliceUpserted(
        cluster=cluster,
        namespace="ns",
        service=name,
        name=f"{name}-src",
        address_type="IPv4",
        endpoints=(ev.Endpoint(addresses=(f"10.{version}.0.1",), ready=True),),
        ports=(ev.EndpointPort(8080, "TCP", "http"),),
    )


def folded() -> fold.ClusterSetState:
    state = fold.ClusterSetState()
    seq = 0
    for c in CLUSTERS:
        for e in (
            ev.ClusterJoined(cluster=c, clusterset="s"),
            ev.Heartbeat(cluster=c, instance="i"),
            export_event(c, "web"),
            a_slice(c, "web", 1),
            ev.LeaseAcquired(cluster=c, name=f"l-{c}", holder="h", duration_seconds=5.0, token=1),
        ):
            seq += 1
            match e:
                case ev.ExportUpserted():
                    subject = subjects.export("s", c, e.namespace, e.name)
                case ev.SliceUpserted():
                    subject = subjects.endpoint_slice("s", c, e.namespace, e.service, e.name)
                case ev.ClusterJoined():
                    subject = subjects.cluster("s", c)
                case ev.Heartbeat():
                    subject = subjects.heartbeat("s", c)
                case ev.LeaseAcquired():
                    subject = subjects.lease("s", c, e.name)
                case _:
                    raise AssertionError(e)
            fold.apply(state, Envelope(seq, subject, T0 + timedelta(seconds=seq), e))
    return state


def test_a_snapshot_round_trips_the_folded_state() -> None:
    state = folded()
    header, body = snapshot.read_header(snapshot.encode(state, IDENTITY, T0))
    snapshot.verify(header, body, IDENTITY, first_seq=1, last_seq=state.position)
    again = snapshot.decode(body)
    assert again.snapshot() == state.snapshot()
    assert again.last_seq == state.last_seq
    assert again.position == state.position == 10
    assert again.counters == state.counters
    assert header.log_time == T0
    assert header.keys == len(state.last_seq)


@pytest.mark.parametrize(
    ("identity", "first_seq", "last_seq", "reason"),
    [
        (snapshot.Identity("other", "MCSYNC_OTHER", IDENTITY.stream_created), 1, 10, "foreign"),
        (
            snapshot.Identity("s", "MCSYNC_S", "2026-02-01T00:00:00+00:00"),
            1,
            10,
            "stream-recreated",
        ),
        (IDENTITY, 12, 20, "truncated"),
        (IDENTITY, 1, 9, "ahead"),
    ],
)
def test_a_snapshot_that_does_not_fit_the_stream_is_refused_with_its_reason(
    identity: snapshot.Identity, first_seq: int, last_seq: int, reason: str
) -> None:
    header, body = snapshot.read_header(snapshot.encode(folded(), IDENTITY, T0))
    with pytest.raises(snapshot.Rejected) as err:
        snapshot.verify(header, body, identity, first_seq, last_seq)
    assert err.value.reason == reason


def test_the_first_event_after_the_position_may_be_the_streams_first() -> None:
    header, body = snapshot.read_header(snapshot.encode(folded(), IDENTITY, T0))
    snapshot.verify(header, body, IDENTITY, first_seq=11, last_seq=10)  # all purged, none lost


@pytest.mark.parametrize("cut", [0, 5, 20, -1])
def test_a_cut_or_flipped_snapshot_is_damaged(cut: int) -> None:
    blob = bytearray(snapshot.encode(folded(), IDENTITY, T0))
    if cut == -1:
        blob[-3] ^= 0x01
    else:
        del blob[cut:]
    with pytest.raises(snapshot.Rejected) as err:
        header, body = snapshot.read_header(bytes(blob))
        snapshot.verify(header, body, IDENTITY, 1, 10)
    assert err.value.reason == "damaged"


def test_a_packed_endpoint_row_holds_every_field_of_an_endpoint() -> None:
    # A new Endpoint field must get its place in the row (and a new snapshot format).
    names = msgspec.structs.fields(ev.Endpoint)
    assert len(get_args(fold.EndpointRow)) == len(names)
    full = ev.Endpoint(
        addresses=("10.0.0.1", "fd00::1"),
        ready=True,
        serving=False,
        terminating=None,
        hostname="h",
        zone="z",
        node_name="n",
    )
    s = ev.SliceUpserted(
        cluster="c",
        namespace="ns",
        service="web",
        name="web-1",
        address_type="IPv4",
        endpoints=(full, ev.Endpoint(addresses=("10.0.0.2",))),
        ports=(ev.EndpointPort(8080, "TCP", "http", "h2c"),),
    )
    packed = fold.SlicesByName()
    packed["web-1"] = s
    assert packed["web-1"] == s
    assert packed == {"web-1": s}
