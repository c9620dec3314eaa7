"""Cluster lifecycle and inventory on real apiservers and NATS: ClusterProfiles, health,
staleness, leave, duplicate ids, and replay giving the same decisions."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import timedelta

import pytest

from engine import identity, jetstream, kube
from engine.core import events as ev
from engine.core import fold, inventory, mcs, plan, subjects
from publishers.membership import ReporterSettings
from subscribers.subscriber import SubscriberSettings
from tests.conftest import ClusterSet
from tests.integration.conftest import (
    Members,
    condition,
    endpoint_slice,
    eventually,
    service,
    service_export,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]

NS = "mcsync-system"
LEASE = 3.0
FAST = {
    "reporter_settings": ReporterSettings(heartbeat_interval=0.5, lease=LEASE),
    "subscriber_settings": SubscriberSettings(lease_seconds=LEASE, tick_seconds=0.2),
}


async def profile(cs: ClusterSet, where: str, member: str) -> kube.Obj | None:
    return await cs[where].kube.get(kube.CLUSTER_PROFILES, NS, member)


async def profiles_everywhere(cs: ClusterSet, member: str) -> list[kube.Obj] | None:
    """The member's profile in every cluster, once each has its status written."""
    got = [await profile(cs, c.name, member) for c in cs.clusters]
    ready = [g for g in got if g and g.get("status")]
    return ready if len(ready) == len(got) else None


async def start_all(members: Members, **kw: object) -> None:
    await asyncio.gather(*(members.start(c.name, **FAST, **kw) for c in members.cs.clusters))


async def test_every_cluster_gets_a_profile_for_every_member(members: Members) -> None:
    await start_all(members)
    cs = members.cs
    for member in ("cluster-1", "cluster-2", "cluster-3"):
        profiles = await eventually(functools.partial(profiles_everywhere, cs, member))
        for p in profiles:
            assert p["metadata"]["labels"][inventory.LABEL_CLUSTER_MANAGER] == "mcsync"
            assert p["metadata"]["labels"][inventory.LABEL_INVENTORY_MEMBER_ID] == member
            assert p["spec"]["clusterManager"]["name"] == "mcsync"
            assert p["spec"]["displayName"] == member
            status = p["status"]
            assert status["version"]["kubernetes"] == "v1.36.3"
            props = {x["name"]: x["value"] for x in status["properties"]}
            assert props[identity.CLUSTER_ID_PROPERTY] == member
            assert props[identity.CLUSTERSET_PROPERTY] == members.clusterset_name
            assert all("lastObservedTime" in x for x in status["properties"])
            assert condition(p, "Joined")["status"] == "True"  # type: ignore[index]
            healthy = condition(p, "ControlPlaneHealthy")
            assert healthy is not None and healthy["status"] == "True"
            assert healthy["reason"] == "APIServerReady"


async def test_a_property_change_reaches_every_profile(members: Members) -> None:
    await start_all(members)
    cs = members.cs
    await cs["cluster-2"].kube.apply(
        kube.CLUSTER_PROPERTIES,
        {
            "apiVersion": kube.CLUSTER_PROPERTIES.api_version,
            "kind": "ClusterProperty",
            "metadata": {"name": "region.example.com"},
            "spec": {"value": "eu-west"},
        },
    )

    async def has_region() -> bool:
        got = await profiles_everywhere(cs, "cluster-2")
        return bool(got) and all(
            {x["name"]: x["value"] for x in p["status"]["properties"]}.get("region.example.com")
            == "eu-west"
            for p in got or []
        )

    try:
        await eventually(has_region)
    finally:
        await cs["cluster-2"].kube.delete(kube.CLUSTER_PROPERTIES, None, "region.example.com")


async def test_access_providers_are_advertised_when_configured(members: Members) -> None:
    cs = members.cs
    server = cs["cluster-3"].cluster.server
    settings = ReporterSettings(
        heartbeat_interval=0.5, lease=LEASE, api_server_url=server, api_server_ca_data="Q0E="
    )
    await members.start("cluster-3", reporter_settings=settings)
    await members.start("cluster-1")
    p = await eventually(lambda: profile(cs, "cluster-1", "cluster-3"))
    assert p["status"]["accessProviders"] == [
        {
            "name": "mcsync",
            "cluster": {
                "server": server,
                "certificate-authority-data": "Q0E=",
                # Which member, for the consumer's exec credential plugin (never a secret).
                "extensions": [
                    {
                        "name": "client.authentication.k8s.io/exec",
                        "extension": {"clusterName": "cluster-3"},
                    }
                ],
            },
        }
    ]


async def _mcs_slices(cs: ClusterSet, where: str, ns: str) -> list[kube.Obj]:
    items, _ = await cs[where].kube.list(kube.ENDPOINT_SLICES, ns, plan.LABEL_SERVICE_NAME)
    return items


async def test_a_killed_publisher_goes_unknown_and_its_endpoints_are_withdrawn_then_readmitted(
    members: Members, namespace: str
) -> None:
    cs = members.cs
    proc = await _exporting_from_a_process(members, namespace)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        await eventually(lambda: _slices_from(cs, namespace, "cluster-2", False), timeout=LEASE + 4)
        assert time.monotonic() - killed <= LEASE + 2 + 1.0  # lease + 2 s, plus polling slack
        p = await profile(cs, "cluster-1", "cluster-2")
        h = condition(p, "ControlPlaneHealthy")
        assert h is not None and (h["status"], h["reason"]) == ("Unknown", "HeartbeatLeaseExpired")
        restarted = time.monotonic()
        proc = _publisher_process(cs, "cluster-2", members.clusterset_name)
        await eventually(lambda: _slices_from(cs, namespace, "cluster-2", True), timeout=10)
        # Waits out the dead instance's lease on its own clock before it may publish.
        assert time.monotonic() - restarted <= LEASE + 5
    finally:
        proc.kill()
        proc.wait()


async def _exporting_from_a_process(
    members: Members, namespace: str, instance: str | None = None, lease: float = LEASE
) -> subprocess.Popen[bytes]:
    """Every cluster runs in-process, except cluster-2's publisher: a process of its own (so it
    can be SIGKILLed), exporting ns/hello with one endpoint that every cluster has imported."""
    cs = members.cs
    await start_all(members, publish=False)
    for name in ("cluster-1", "cluster-3"):
        await members.members[name].stop()
        await members.start(name, **FAST)
    proc = _publisher_process(cs, "cluster-2", members.clusterset_name, instance, lease)
    try:
        k2 = cs["cluster-2"].kube
        await k2.create(kube.SERVICES, service(namespace))
        await k2.create(kube.SERVICE_EXPORTS, service_export(namespace))
        await k2.create(
            kube.ENDPOINT_SLICES, endpoint_slice(namespace, "hello", "hello-1", ["10.2.0.1"])
        )
        await eventually(lambda: _slices_from(cs, namespace, "cluster-2", True), timeout=30)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


async def _slices_from(cs: ClusterSet, ns: str, source: str, present: bool) -> bool:
    for c in cs.clusters:
        got = [
            s
            for s in await _mcs_slices(cs, c.name, ns)
            if s["metadata"]["labels"][plan.LABEL_SOURCE_CLUSTER] == source
        ]
        if bool(got) != present:
            return False
    return True


def _publisher_process(
    cs: ClusterSet,
    cluster: str,
    clusterset: str,
    instance: str | None = None,
    lease: float = LEASE,
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if instance is not None:
        env["MCSYNC_INSTANCE"] = instance  # what the manifests set: the pod's name
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "publisher",
            "--nats-url",
            cs.nats.url,
            "--clusterset",
            clusterset,
            "--kubeconfig",
            cs[cluster].kubeconfig,
            "--health-port",
            "0",
            "--heartbeat-interval",
            "0.5",
            "--lease",
            str(lease),
            "--log-format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


async def test_a_publisher_restarted_in_its_pod_resumes_at_once(
    members: Members, namespace: str
) -> None:
    """A crash (no goodbye heartbeat) and a restart in the same pod: the same instance, so no
    lease to wait out. (Another instance after a crash waits it out: see the killed-publisher
    test above; two live instances are refused: see the second-publisher test below.)"""
    cs = members.cs
    k2 = cs["cluster-2"].kube
    # The publisher's own lease is long here, so waiting it out would show: 20 s.
    proc = await _exporting_from_a_process(members, namespace, instance="pod-a", lease=20.0)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        await k2.create(
            kube.ENDPOINT_SLICES, endpoint_slice(namespace, "hello", "hello-2", ["10.2.0.2"])
        )
        restarted = time.monotonic()
        proc = _publisher_process(
            cs, "cluster-2", members.clusterset_name, instance="pod-a", lease=20.0
        )

        async def both() -> bool:
            slices = await _mcs_slices(cs, "cluster-1", namespace)
            return sum(len(s["endpoints"]) for s in slices) == 2

        await eventually(both, timeout=20.0)
        assert time.monotonic() - restarted < 12.0  # start-up and propagation, no 20 s lease
    finally:
        proc.kill()
        proc.wait()


async def test_leaving_removes_the_profile_exports_and_slices_everywhere(
    members: Members, namespace: str
) -> None:
    cs = members.cs
    await start_all(members)
    k3 = cs["cluster-3"].kube
    await k3.create(kube.SERVICES, service(namespace))
    await k3.create(kube.SERVICE_EXPORTS, service_export(namespace))
    await k3.create(kube.ENDPOINT_SLICES, endpoint_slice(namespace, "hello", "h-1", ["10.3.0.1"]))
    await eventually(lambda: _slices_from(cs, namespace, "cluster-3", True))
    await eventually(lambda: profiles_everywhere(cs, "cluster-3"))
    await k3.delete(kube.CLUSTER_PROPERTIES, None, identity.CLUSTERSET_PROPERTY)

    async def gone() -> bool:
        for c in cs.clusters:
            if await profile(cs, c.name, "cluster-3") is not None:
                return False
            if await c.kube.get(kube.SERVICE_IMPORTS, namespace, "hello") is not None:
                return False
        return await _slices_from(cs, namespace, "cluster-3", False)

    await eventually(gone)
    # The log says why: tombstones first, then the leave.
    last = members.members["cluster-3"].publisher
    assert last is not None and not last.reporter.member


async def test_a_second_publisher_claiming_the_same_cluster_id_is_refused(
    members: Members,
) -> None:
    await start_all(members)
    impostor = members.new("cluster-1", **FAST, subscribe=False)
    await impostor.start()
    try:
        # It waits for the live publisher's lease, which never lapses: it never publishes.
        await asyncio.sleep(LEASE + 1)
        assert impostor.publisher is not None and not impostor.publisher.ready.is_set()
        assert impostor.publisher.appends == 0
    finally:
        await impostor.stop()


async def test_replaying_the_recorded_log_gives_the_same_decisions(
    members: Members, namespace: str
) -> None:
    cs = members.cs
    await start_all(members)
    for c in ("cluster-1", "cluster-2"):
        await cs[c].kube.create(kube.SERVICES, service(namespace))
        await cs[c].kube.create(kube.SERVICE_EXPORTS, service_export(namespace))
    await eventually(lambda: cs["cluster-3"].kube.get(kube.SERVICE_IMPORTS, namespace, "hello"))
    await members.members["cluster-2"].stop()  # goodbye heartbeat, then silence
    live = members.members["cluster-1"].subscriber
    assert live is not None

    async def withdrawn() -> bool:
        return "cluster-2" not in live.admitted()

    await eventually(withdrawn, timeout=LEASE + 3)
    await asyncio.sleep(1.0)  # two more heartbeats of the others: events past the lapse
    # Replay the log, deciding at every event with that event's time, twice.
    nc = await jetstream.connect(cs.nats.url)
    try:
        log = jetstream.EventLog(nc, members.clusterset_name)
        end = int((await log.js.stream_info(log.stream)).state.last_seq)  # members go on
        first = await _decisions(log, end, namespace)
        assert first == await _decisions(log, end, namespace)
        assert ("cluster-1", "cluster-2") in {clusters for _, clusters in first}
        # At the last recorded event (long after cluster-2 went silent) the replay withdraws
        # cluster-2 exactly as the live subscriber did.
        assert first[-1][1] == ("cluster-1",)
        assert "cluster-2" not in live.admitted()
    finally:
        await jetstream.close(nc)


async def _decisions(
    log: jetstream.EventLog, end: int, namespace: str
) -> list[tuple[int, tuple[str, ...]]]:
    """The contributing clusters of ns/hello after each event, decided at the event's time."""
    state = fold.ClusterSetState()
    lease = timedelta(seconds=LEASE)
    out = []
    async for item in log.replay(end_seq=end):
        assert isinstance(item.result, fold.Envelope)
        fold.apply(state, item.result)
        admitted = inventory.admitted(state, item.result.time, lease, "withdraw")
        members_ = frozenset(inventory.members(state))
        exports: Mapping[str, ev.ExportUpserted] = state.exports.get((namespace, "hello"), {})
        out.append((item.seq, mcs.view(namespace, "hello", exports, admitted, members_).clusters))
    return out


async def test_two_live_publishers_for_one_cluster_id_are_reported_and_one_stops(
    members: Members, namespace: str
) -> None:
    cs = members.cs
    await start_all(members)
    await cs["cluster-1"].kube.create(kube.SERVICES, service(namespace))
    await cs["cluster-1"].kube.create(kube.SERVICE_EXPORTS, service_export(namespace))
    await eventually(lambda: cs["cluster-2"].kube.get(kube.SERVICE_IMPORTS, namespace, "hello"))
    me = members.members["cluster-1"]
    assert me.publisher is not None
    # The import is visible before its last writes (status, slices, spec.ips): let them land.
    writes_before = await _settled(members.members["cluster-2"].k8s)
    # Another process heartbeats as cluster-1 (it skipped the start-up check, e.g. both
    # started at the same moment). Its instance id sorts after ours: it is the one to stop,
    # so ours keeps publishing and reports the duplicate.
    nc = await jetstream.connect(cs.nats.url)
    try:
        log = jetstream.EventLog(nc, members.clusterset_name)
        subject = subjects.heartbeat(members.clusterset_name, "cluster-1")
        for _ in range(3):
            await log.append(
                jetstream.Append(subject, ev.Heartbeat(cluster="cluster-1", instance="~impostor"))
            )
            await asyncio.sleep(0.3)

        async def flagged() -> bool:
            p = await profile(cs, "cluster-2", "cluster-1")
            c = condition(p, "mcsync.io/UniqueClusterID")
            return c is not None and (c["status"], c["reason"]) == ("False", "DuplicateClusterID")

        await eventually(flagged, timeout=10)
        dup = me.metrics.duplicate_ids.labels("cluster-1")._value.get()
        assert dup == 1
        assert me.alive()  # ours keeps running
        # The imports did not flap: cluster-2 wrote nothing but the profile status.
        assert members.members["cluster-2"].k8s.writes - writes_before <= 2
        # Once the impostor is silent for a lease, the condition goes away.
        await eventually(lambda: _not_flagged(cs), timeout=LEASE + 5)
    finally:
        await nc.close()


async def _settled(k: kube.Kube, for_seconds: float = 1.5) -> int:
    """The client's write count once it has stayed the same for ``for_seconds``."""
    for _ in range(20):
        before = k.writes
        await asyncio.sleep(for_seconds)
        if k.writes == before:
            return before
    raise AssertionError(f"still writing after {20 * for_seconds} s")


async def _not_flagged(cs: ClusterSet) -> bool:
    p = await profile(cs, "cluster-2", "cluster-1")
    return p is not None and condition(p, "mcsync.io/UniqueClusterID") is None
