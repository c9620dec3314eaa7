"""A broken or hostile cluster against running publishers and subscribers on real apiservers.

Each attack is performed the way a broken upgrade or a compromised cluster would: raw messages
on the attacker's own subjects (or on the victim's, standing in for the victim's own broken
publisher), then every process restarted. The other clusters' objects must equal what they were
without the attack, nothing may crash, and every attack must show in the metrics.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.js import api

from engine import jetstream, kube, runner
from engine.core import events as ev
from engine.core import subjects
from engine.local.natsserver import NatsServer
from tests.integration.conftest import (
    Members,
    endpoint_slice,
    eventually,
    get_import,
    hello_export,
    hello_service,
    mcs_slices,
)
from tests.integration.test_hostile import headers_of, raw
from tests.integration.test_inventory import FAST, LEASE, profile, start_all

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]


async def objects(members: Members, cluster: str, ns: str) -> tuple[object, ...]:
    """What a cluster materialized for ``ns/hello``: import spec, slices' endpoints, profiles."""
    imp = await get_import(members.cs, cluster, ns)
    slices = await mcs_slices(members.cs, cluster, ns)
    profiles = [
        ((await profile(members.cs, cluster, c.name)) or {}).get("metadata", {}).get("name")
        for c in members.cs.clusters
    ]
    return (
        (imp or {}).get("spec"),
        sorted(str(s.get("endpoints")) for s in slices),
        profiles,
    )


async def exported_everywhere(members: Members, ns: str) -> None:
    cs = members.cs
    await cs["cluster-1"].kube.create(kube.SERVICES, hello_service(ns))
    await cs["cluster-1"].kube.create(kube.SERVICE_EXPORTS, hello_export(ns))

    async def seen() -> bool:
        return all([await get_import(cs, c, ns) for c in ("cluster-2", "cluster-3")])

    await eventually(seen, timeout=30)


async def test_bad_last_messages_change_nothing_after_every_process_restarts(
    members: Members, namespace: str
) -> None:
    await start_all(members)
    await exported_everywhere(members, namespace)
    await asyncio.sleep(1.0)  # let the last status writes land
    before = {c: await objects(members, c, namespace) for c in ("cluster-2", "cluster-3")}

    # cluster-1's publisher breaks: garbage, a newer version and a forged body land as the last
    # message of its membership subject and of its export subject.
    nc = await jetstream.connect(members.cs.nats.url)
    try:
        log = jetstream.EventLog(nc, members.clusterset_name)
        name = members.clusterset_name
        export = subjects.export(name, "cluster-1", namespace, "hello")
        member = subjects.cluster(name, "cluster-1")
        joined = ev.ClusterJoined(cluster="cluster-1", clusterset=name)
        newer = ev.encode(joined).replace(b"cluster.joined.v1", b"cluster.joined.v2")
        await raw(log, member, newer, headers_of(joined, member, name))
        await raw(log, export, b"\xff\x00garbage", headers_of(joined, export, name))
        forged = ev.ExportWithdrawn(cluster="cluster-2", namespace=namespace, name="hello")
        await raw(log, export, ev.encode(forged), headers_of(forged, export, name))
    finally:
        await nc.close()

    # Every subscriber restarts (a rollout): the state must be read back behind the bad
    # messages, so nothing is withdrawn and nothing is written for the attack.
    for name_ in ("cluster-2", "cluster-3"):
        await members.stop(name_)
        await members.start(name_, **FAST)

    for c in ("cluster-2", "cluster-3"):
        assert await objects(members, c, namespace) == before[c]
        m = members.members[c]
        assert m.subscriber is not None
        assert m.metrics.unusable.labels(c, "unknown-version")._value.get() >= 1
        assert m.metrics.unusable.labels(c, "refused")._value.get() >= 1
        assert m.metrics.readbacks.labels(c)._value.get() >= 2


async def test_a_foreign_subject_under_its_prefix_does_not_crash_loop_a_publisher(
    members: Members,
) -> None:
    nc = await jetstream.connect(members.cs.nats.url)
    try:
        log = jetstream.EventLog(nc, members.clusterset_name)
        await log.ensure()
        bogus = f"mcsync.{members.clusterset_name}.cluster-1.bogus.x"
        hb = ev.Heartbeat(cluster="cluster-1")
        await raw(log, bogus, ev.encode(hb), headers_of(hb, bogus, members.clusterset_name))
    finally:
        await nc.close()

    m = await members.start("cluster-1", **FAST)
    assert m.alive() and m.is_ready()
    assert m.metrics.refused.labels("cluster-1")._value.get() >= 1


async def test_a_forged_heartbeat_neither_delays_nor_stops_a_publisher(members: Members) -> None:
    await start_all(members)
    name = members.clusterset_name
    nc = await jetstream.connect(members.cs.nats.url)
    try:
        log = jetstream.EventLog(nc, name)
        # On cluster-1's subject, a heartbeat that speaks for cluster-2 from another instance.
        subject = subjects.heartbeat(name, "cluster-1")
        forged = ev.Heartbeat(cluster="cluster-2", instance="~impostor")
        for _ in range(3):
            await raw(log, subject, ev.encode(forged), headers_of(forged, subject, name))
            await asyncio.sleep(0.3)
        running = members.members["cluster-1"]
        await asyncio.sleep(1.5)  # three heartbeats of its own meanwhile
        assert running.alive()  # no ConfigError
        assert running.metrics.duplicate_ids.labels("cluster-1")._value.get() == 0

        # A restart right after a forged last heartbeat does not wait out a lease.
        await members.stop("cluster-1")
        await raw(log, subject, ev.encode(forged), headers_of(forged, subject, name))
        t0 = time.monotonic()
        await members.start("cluster-1", **FAST)
        assert time.monotonic() - t0 < LEASE
    finally:
        await nc.close()


async def test_no_process_exits_while_nats_is_away(members: Members) -> None:
    """The hub stops for longer than a heartbeat lease: publishers and subscribers stay up and
    say why they are not ready; when it returns they are ready again by themselves."""
    async with NatsServer() as server:
        members.cs = type(members.cs)(
            members.cs.clusters, members.cs.local, server, members.cs.by_name
        )
        await start_all(members)
        m: runner.Member = members.members["cluster-1"]
        server.stop()
        await eventually(lambda: asyncio.sleep(0, not m.is_ready()), timeout=10)
        reason = m.not_ready_because()
        assert reason is not None and "NATS" in reason
        await asyncio.sleep(LEASE * 3)  # heartbeats fail all along
        assert all(x.alive() for x in members.members.values())
        await server.restart()
        await eventually(
            lambda: asyncio.sleep(0, all(x.is_ready() for x in members.members.values())),
            timeout=30,
        )
        hb = m.publisher.reporter.heartbeats if m.publisher else 0
        await eventually(
            lambda: asyncio.sleep(
                0, m.publisher is not None and m.publisher.reporter.heartbeats > hb
            ),
            timeout=10,
        )
        await members.stop_all()


async def test_a_cluster_exhausting_consumers_in_the_mirror_layout_starves_only_itself(
    members: Members, namespace: str, tmp_path: Path
) -> None:
    """The consumer attack with real processes: every cluster in an account of its own on the
    hub (the mirror layout of deploy/nats/hub.conf); cluster-3's credentials create consumers
    until refused; then every process restarts. Clusters 1 and 2 keep working and end where they
    were; cluster-3 hurt only itself, and its processes stay up."""
    from engine import natsconfig
    from tests.integration.test_nats_permissions import HASHES, PASSWORDS, HubServer

    name = members.clusterset_name
    logins = {"cluster-1": "a", "cluster-2": "b", "cluster-3": "observer"}  # test hashes
    hub_conf = natsconfig.Hub(
        clusterset=name,
        clusters={c: natsconfig.bcrypt_password(HASHES[k]) for c, k in logins.items()},
        admin=natsconfig.bcrypt_password(HASHES["admin"]),
        mirrors=True,
        cluster_limits=natsconfig.AccountLimits(max_consumers=16),
    )
    async with HubServer(name="mcsync-hub", hub=hub_conf, store_dir=tmp_path / "hub") as hub:
        admin = await jetstream.connect(hub.url, user="admin", password=PASSWORDS["admin"])
        try:
            await jetstream.EventLog(admin, name).ensure()

            def member(cluster: str) -> runner.Member:
                m = members.new(cluster, **FAST, log_layout="mirror", create_stream=False)
                m.nats_url, m.nats_user = hub.url, cluster
                m.nats_password = PASSWORDS[logins[cluster]]
                return m

            async def start(cluster: str) -> None:
                m = member(cluster)
                await m.start()
                members.members[cluster] = m

            for c in logins:
                await start(c)
                await members.members[c].wait_ready(60)
            await exported_everywhere(members, namespace)
            await asyncio.sleep(1.5)
            before = {c: await objects(members, c, namespace) for c in ("cluster-1", "cluster-2")}
            log = subjects.stream_name(name)
            log_consumers = (await admin.jetstream().stream_info(log)).state.consumer_count

            # The attack, with cluster-3's credentials.
            nc = await jetstream.connect(hub.url, user="cluster-3", password=PASSWORDS["observer"])
            try:
                mirror = natsconfig.mirror_stream(name, "cluster-3")
                refused = None
                for _ in range(5000):
                    try:
                        await nc.jetstream().add_consumer(
                            mirror,
                            api.ConsumerConfig(
                                ack_policy=api.AckPolicy.NONE, inactive_threshold=3600
                            ),
                        )
                    except Exception as exc:
                        refused = exc
                        break
                assert getattr(refused, "err_code", None) == 10026, refused
            finally:
                await nc.close()
            assert (await admin.jetstream().stream_info(log)).state.consumer_count == log_consumers

            # Every process restarts.
            for c in logins:
                await members.stop(c)
            for c in logins:
                await start(c)
            for c in ("cluster-1", "cluster-2"):
                await members.members[c].wait_ready(60)
                assert await objects(members, c, namespace) == before[c]
            # cluster-3's subscriber finds its account full: it stays up and says why.
            m3 = members.members["cluster-3"]
            await asyncio.sleep(3.0)
            assert m3.alive()
            # A change still crosses between the clusters that were not attacking.
            await members.cs["cluster-1"].kube.create(
                kube.ENDPOINT_SLICES, endpoint_slice(namespace, "hello", "hello-9", ["10.1.0.9"])
            )

            async def crossed() -> bool:
                slices = await mcs_slices(members.cs, "cluster-2", namespace)
                return any("10.1.0.9" in str(s.get("endpoints")) for s in slices)

            await eventually(crossed, timeout=30)
            await members.stop_all()
        finally:
            await admin.close()
