"""Warm restart: a subscriber resumes from its saved state with only the events after it, and
ends where a full bootstrap ends; a snapshot it cannot trust is set aside for a full bootstrap.

Real nats-server; the last test runs real members on the real apiservers.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import structlog.testing
from nats.js import api

from engine import jetstream, kube
from engine.core import events as ev
from engine.core import fold, snapshot, subjects
from engine.core.fold import Envelope
from engine.observe.metrics import Metrics
from subscribers import warmstart
from subscribers.subscriber import SubscriberSettings
from tests.integration.conftest import (
    Members,
    endpoint_slice,
    eventually,
    export_event,
    service,
    service_export,
)

pytestmark = pytest.mark.integration

CLUSTERS = ("cluster-1", "cluster-2")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def a_slice(cluster: str, name: str, version: int) -> ev.SliceUpserted:
    return ev.SliceUpserted(
        cluster=cluster,
        namespace="ns",
        service=name,
        name=f"{name}-src",
        address_type="IPv4",
        endpoints=tuple(
            ev.Endpoint(addresses=(f"10.{version}.0.{j + 1}",), ready=True) for j in range(3)
        ),
        ports=(ev.EndpointPort(8080, "TCP", "http"),),
    )


async def put(elog: jetstream.EventLog, *events: ev.Event) -> None:
    """Append events unconditionally, each on its own subject."""
    items = []
    for e in events:
        match e:
            case ev.ExportUpserted() | ev.ExportWithdrawn():
                subject = subjects.export(elog.clusterset, e.cluster, e.namespace, e.name)
            case ev.SliceUpserted() | ev.SliceRemoved():
                subject = subjects.endpoint_slice(
                    elog.clusterset, e.cluster, e.namespace, e.service, e.name
                )
            case ev.ClusterJoined():
                subject = subjects.cluster(elog.clusterset, e.cluster)
            case ev.Heartbeat():
                subject = subjects.heartbeat(elog.clusterset, e.cluster)
            case _:
                raise AssertionError(e)
        items.append(jetstream.Append(subject, e))
    await elog.append_many(items)


async def first_history(elog: jetstream.EventLog) -> None:
    await put(
        elog,
        *(ev.ClusterJoined(cluster=c, clusterset=elog.clusterset) for c in CLUSTERS),
        *(export_event(c, f"svc-{i}") for c in CLUSTERS for i in range(10)),
        *(a_slice(c, f"svc-{i}", 1) for c in CLUSTERS for i in range(10)),
    )
    # Updates of the same keys: a bootstrap reads only the last of each.
    await put(elog, *(a_slice("cluster-1", f"svc-{i}", 2) for i in range(10)))


async def later_history(elog: jetstream.EventLog) -> int:
    """What happens while the subscriber is down; returns how many events that is."""
    events: list[ev.Event] = [
        a_slice("cluster-1", "svc-0", 3),
        a_slice("cluster-2", "svc-1", 3),
        ev.ExportWithdrawn(cluster="cluster-2", namespace="ns", name="svc-2"),
        ev.SliceRemoved(cluster="cluster-2", namespace="ns", service="svc-2", name="svc-2-src"),
        export_event("cluster-1", "svc-new"),
        a_slice("cluster-1", "svc-new", 1),
        ev.Heartbeat(cluster="cluster-1"),
    ]
    await put(elog, *events)
    return len(events)


async def follow(
    elog: jetstream.EventLog, state: fold.ClusterSetState, start_seq: int | None = None
) -> list[Envelope]:
    """Fold the log into ``state`` until caught up; the envelopes read."""
    read: list[Envelope] = []

    def on_event(env: Envelope) -> None:
        read.append(env)
        fold.apply(state, env)

    follower = jetstream.Follower(elog, "reader", on_event, start_seq=start_seq)
    await follower.start()
    try:
        await asyncio.wait_for(follower.caught_up.wait(), 20)
    finally:
        await follower.stop()
    return read


async def saved(elog: jetstream.EventLog, path: Path) -> fold.ClusterSetState:
    """Bootstrap in full, save the state to ``path``, return it."""
    state = fold.ClusterSetState()
    await follow(elog, state)
    saver = warmstart.Saver(elog, path, "reader")
    await saver.identify()
    assert saver.save(state, T0)
    return state


async def test_a_restart_from_a_snapshot_reads_only_later_events_and_equals_a_full_bootstrap(
    log: jetstream.EventLog, tmp_path: Path
) -> None:
    await first_history(log)
    path = tmp_path / "state"
    before = await saved(log, path)
    later = await later_history(log)

    metrics = Metrics()
    restored = await warmstart.load(log, path, "reader", metrics)
    assert restored is not None
    assert restored.position == before.position
    assert restored.log_time == T0
    read = await follow(log, restored.state, start_seq=restored.position + 1)
    assert len(read) == later
    assert all(e.seq > before.position for e in read)

    full = fold.ClusterSetState()
    await follow(log, full)
    assert restored.state.snapshot() == full.snapshot()
    assert restored.state.last_seq == full.last_seq
    assert restored.state.position == full.position
    assert ("ns", "svc-new") in restored.state.exports
    assert "cluster-2" not in restored.state.exports[("ns", "svc-2")]
    assert metrics.snapshots.labels("reader", "resumed", "")._value.get() == 1


async def test_a_snapshot_with_nothing_after_it_resumes_and_reads_nothing(
    log: jetstream.EventLog, tmp_path: Path
) -> None:
    await first_history(log)
    path = tmp_path / "state"
    before = await saved(log, path)
    restored = await warmstart.load(log, path, "reader")
    assert restored is not None
    assert await follow(log, restored.state, start_seq=restored.position + 1) == []
    assert restored.state.snapshot() == before.snapshot()


async def rejected(elog: jetstream.EventLog, path: Path, reason: str) -> None:
    """Loading ``path`` gives None, logs the reason and counts it."""
    metrics = Metrics()
    with structlog.testing.capture_logs() as logs:
        assert await warmstart.load(elog, path, "reader", metrics) is None
    lines = [e for e in logs if e["event"] == "snapshot.rejected"]
    assert [e["reason"] for e in lines] == [reason], logs
    assert metrics.snapshots.labels("reader", "rejected", reason)._value.get() == 1


async def test_a_damaged_snapshot_is_rejected_for_a_full_bootstrap(
    log: jetstream.EventLog, tmp_path: Path
) -> None:
    await first_history(log)
    path = tmp_path / "state"
    await saved(log, path)
    blob = bytearray(path.read_bytes())
    blob[-20] ^= 0xFF  # one flipped byte in the body
    path.write_bytes(bytes(blob))
    await rejected(log, path, "damaged")
    path.write_bytes(b"mcsync-state\n{not json")
    await rejected(log, path, "damaged")
    path.write_bytes(b"")
    await rejected(log, path, "damaged")


async def test_a_snapshot_of_another_format_is_rejected(
    log: jetstream.EventLog, tmp_path: Path
) -> None:
    await first_history(log)
    path = tmp_path / "state"
    await saved(log, path)
    header, body = snapshot.read_header(path.read_bytes())
    other = snapshot.Header(
        snapshot.FORMAT + 1,
        header.identity,
        header.position,
        header.log_time,
        header.keys,
        header.sha256,
    )
    path.write_bytes(snapshot.MAGIC + msgspec.json.encode(other) + b"\n" + bytes(body))
    await rejected(log, path, "format")


async def test_a_snapshot_of_another_clusterset_is_rejected(
    log: jetstream.EventLog, tmp_path: Path
) -> None:
    other = jetstream.EventLog(log.nc, log.clusterset + "x")
    await other.ensure()
    await first_history(other)
    await first_history(log)
    path = tmp_path / "state"
    await saved(other, path)
    await rejected(log, path, "foreign")


async def test_a_snapshot_of_a_stream_created_again_is_rejected(
    log: jetstream.EventLog, tmp_path: Path
) -> None:
    await first_history(log)
    path = tmp_path / "state"
    await saved(log, path)
    await log.js.delete_stream(log.stream)
    await log.ensure()
    await first_history(log)
    await first_history(log)  # sequences past the snapshot's: only the identity tells
    await rejected(log, path, "stream-recreated")


async def test_a_snapshot_whose_later_events_are_gone_is_rejected(
    log: jetstream.EventLog, tmp_path: Path
) -> None:
    # mcsync's stream denies purges; its max_age (or an operator's edit) can still drop old
    # events. A stream of the same name that allows purging stands in for that.
    await log.js.delete_stream(log.stream)
    await log.js.add_stream(
        api.StreamConfig(
            name=log.stream,
            subjects=[subjects.all_subjects(log.clusterset)],
            allow_direct=True,
            allow_msg_ttl=True,
        )
    )
    await first_history(log)
    path = tmp_path / "state"
    before = await saved(log, path)
    await later_history(log)
    await log.js.purge_stream(log.stream, seq=before.position + 3)  # keeps from there on
    await rejected(log, path, "truncated")


# --- a subscriber with a state directory ---------------------------------------------------


async def test_a_subscriber_resumes_from_its_state_dir_and_bootstraps_when_the_file_is_damaged(
    members: Members, namespace: str, tmp_path: Path, clean_namespaces: list[str]
) -> None:
    cs = members.cs
    await members.start_as("cluster-1/publisher", "cluster-1", subscribe=False)
    k1 = cs["cluster-1"].kube
    await k1.create(kube.SERVICES, service(namespace, "web"))
    await k1.create(kube.SERVICE_EXPORTS, service_export(namespace, "web"))
    await k1.create(kube.ENDPOINT_SLICES, endpoint_slice(namespace, "web", "web-a", ["10.7.0.1"]))
    settings = SubscriberSettings(state_dir=str(tmp_path), snapshot_seconds=3600)

    async def imported(addresses: list[str]) -> bool:
        items, _ = await cs["cluster-2"].kube.list(
            kube.ENDPOINT_SLICES, namespace, "multicluster.kubernetes.io/service-name=web"
        )
        got = sorted(a for s in items for e in s["endpoints"] for a in e["addresses"])
        return got == addresses

    key = "cluster-2/subscriber"
    sub = await members.start_as(key, "cluster-2", publish=False, subscriber_settings=settings)
    await eventually(lambda: imported(["10.7.0.1"]))
    assert sub.metrics.snapshots.labels("cluster-2", "rejected", "missing")._value.get() == 1
    await members.stop(key)  # saves on the way out
    files = list(tmp_path.glob("*.state"))
    assert len(files) == 1

    # While it is down, the source slice changes: the restart reads that and nothing more.
    await k1.apply(kube.ENDPOINT_SLICES, endpoint_slice(namespace, "web", "web-a", ["10.7.0.2"]))
    await asyncio.sleep(0.5)
    sub = await members.start_as(key, "cluster-2", publish=False, subscriber_settings=settings)
    assert sub.metrics.snapshots.labels("cluster-2", "resumed", "")._value.get() == 1
    await eventually(lambda: imported(["10.7.0.2"]))
    assert sub.subscriber is not None
    full = fold.ClusterSetState()
    await follow(sub.subscriber.log, full)
    assert sub.subscriber.state.exports == full.exports
    assert sub.subscriber.state.slices == full.slices
    await members.stop(key)

    blob = bytearray(files[0].read_bytes())
    blob[-5] ^= 0xFF
    files[0].write_bytes(bytes(blob))
    sub = await members.start_as(key, "cluster-2", publish=False, subscriber_settings=settings)
    assert sub.metrics.snapshots.labels("cluster-2", "rejected", "damaged")._value.get() == 1
    await eventually(lambda: imported(["10.7.0.2"]))
