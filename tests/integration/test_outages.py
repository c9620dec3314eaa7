"""Fail static: an outage of the sync plane withdraws nothing, and recovery needs nobody.

Each test runs real publishers and subscribers on real apiservers against a nats-server of its
own, then takes the log away from everyone (the hub down) or from one member (its connection
cut by a proxy), samples every cluster's objects all through the outage, and checks what comes
back. The rows of the situation table in docs/architecture.md are tested here (a member that
dies is tested in test_inventory).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from engine import jetstream, kube, runner
from engine.local import procs
from engine.local.natsserver import NatsCluster, NatsServer
from tests.conftest import ClusterSet
from tests.integration.conftest import (
    Members,
    endpoint_slice,
    eventually,
    get_import,
    hello_export,
    hello_service,
    mcs_slices,
)
from tests.integration.test_inventory import FAST, LEASE, start_all

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]

OUTAGE = 60.0


class _Half(asyncio.Protocol):
    """One side of a proxied connection: what it receives goes to its peer."""

    def __init__(self, cut: Cut) -> None:
        self.cut = cut
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.cut.transports.add(transport)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.cut.transports.discard(self.transport)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Client(_Half):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.cut.open:
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            return
        self.cut.tasks.add(asyncio.get_running_loop().create_task(self._dial()))

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(
                lambda: _Half(self.cut), "127.0.0.1", self.cut.upstream_port
            )
        except OSError:
            if self.transport is not None:
                self.transport.abort()
            return
        up.peer, self.peer = self, up
        assert up.transport is not None
        for data in self.pending:
            up.transport.write(data)
        self.pending.clear()


class Cut:
    """A TCP proxy in front of the nats-server whose connections can be cut and let through."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = procs.free_port()
        self.open = True
        self.transports: set[asyncio.Transport] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Client(self), "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Reset every connection and refuse new ones (a network partition): the port stops
        listening, so a reconnect is refused as by an unreachable server."""
        self.open = False
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for transport in list(self.transports):
            transport.abort()

    async def heal(self) -> None:
        self.open = True
        await self.start()

    async def stop(self) -> None:
        await self.cut()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.sleep(0)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with NatsServer(store_dir=tmp_path / "hub") as server:
        yield server


async def snapshot(members: Members, cluster: str, ns: str) -> tuple[object, ...]:
    imp = await get_import(members.cs, cluster, ns)
    slices = await mcs_slices(members.cs, cluster, ns)
    return (
        (imp or {}).get("spec"),
        sorted(
            (s["metadata"]["name"], str(s.get("endpoints")), str(s.get("ports"))) for s in slices
        ),
    )


async def exported(members: Members, ns: str, cluster: str, addresses: list[str]) -> None:
    k = members.cs[cluster].kube
    await k.create(kube.SERVICES, hello_service(ns))
    await k.create(kube.SERVICE_EXPORTS, hello_export(ns))
    await k.create(kube.ENDPOINT_SLICES, endpoint_slice(ns, "hello", "hello-1", addresses))


async def everywhere(members: Members, ns: str, want: int) -> bool:
    """Every cluster has the import with ``want`` endpoints in its MCS slices."""
    for c in members.cs.clusters:
        slices = await mcs_slices(members.cs, c.name, ns)
        if sum(len(s.get("endpoints") or []) for s in slices) != want:
            return False
        if await get_import(members.cs, c.name, ns) is None:
            return False
    return True


async def held(
    members: Members,
    ns: str,
    before: dict[str, tuple[object, ...]],
    seconds: float,
    interval: float = 1.0,
    midway: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """For ``seconds``, sampled every ``interval``: each cluster in ``before`` shows exactly
    those objects and no process has exited. ``midway`` runs once, halfway through (a change
    made during the outage)."""
    t0 = time.monotonic()
    pending = midway
    while time.monotonic() - t0 < seconds:
        for c, objects in before.items():
            assert await snapshot(members, c, ns) == objects, f"{c} changed"
        assert all(m.alive() for m in members.members.values()), "a process exited"
        if pending is not None and time.monotonic() - t0 > seconds / 2:
            await pending()
            pending = None
        await asyncio.sleep(interval)


async def hub_down_changes_nothing(members: Members, ns: str, hub: NatsServer) -> None:
    """Stop the hub for ``OUTAGE``: every cluster's objects stay as they were, sampled every
    second, no process exits; cluster-1 adds an endpoint halfway, which the others must not
    see yet; cluster-2 and cluster-3 write nothing. The hub stays down."""
    names = [c.name for c in members.cs.clusters]
    before = {c: await snapshot(members, c, ns) for c in names}
    writes_before = {c: writes(members.members[c]) for c in names}
    hub.stop()
    await held(
        members,
        ns,
        before,
        OUTAGE,
        midway=lambda: members.cs["cluster-1"].kube.create(
            kube.ENDPOINT_SLICES, endpoint_slice(ns, "hello", "hello-2", ["10.1.0.3"])
        ),
    )
    for c in ("cluster-2", "cluster-3"):
        assert writes(members.members[c]) == writes_before[c], f"{c} wrote during the outage"


def writes(m: runner.Member) -> int:
    return m.k8s.writes


async def test_the_hub_down_for_a_minute_changes_nothing_and_recovery_is_quick(
    members: Members, namespace: str, hub: NatsServer
) -> None:
    members.cs = ClusterSet(members.cs.clusters, members.cs.local, hub, members.cs.by_name)
    await start_all(members)
    await exported(members, namespace, "cluster-1", ["10.1.0.1", "10.1.0.2"])
    await eventually(lambda: everywhere(members, namespace, 2), timeout=30)
    await asyncio.sleep(1.5)  # the last status writes land
    await hub_down_changes_nothing(members, namespace, hub)
    reasons = [m.not_ready_because() for m in members.members.values()]
    assert all(r is not None and "NATS" in r for r in reasons), reasons

    await hub.restart()
    back = time.monotonic()
    await eventually(lambda: everywhere(members, namespace, 3), timeout=30, interval=0.1)
    recovered = time.monotonic() - back
    assert recovered <= 5.0 + 2.0, f"the change took {recovered:.1f} s after the hub returned"
    await eventually(
        lambda: asyncio.sleep(0, all(m.is_ready() for m in members.members.values())),
        timeout=30,
    )


async def test_a_member_cut_off_is_stale_elsewhere_and_keeps_everything_itself(
    members: Members, namespace: str, hub: NatsServer
) -> None:
    cut = Cut(hub.port)
    await cut.start()
    try:
        members.cs = ClusterSet(members.cs.clusters, members.cs.local, hub, members.cs.by_name)
        for c in ("cluster-1", "cluster-2"):
            await members.start(c, **FAST)
        # cluster-3 reaches NATS only through the proxy.
        m3 = members.new("cluster-3", **FAST)
        m3.nats_url = cut.url
        await m3.start()
        await m3.wait_ready()
        members.members["cluster-3"] = m3
        await exported(members, namespace, "cluster-1", ["10.1.0.1"])
        k3 = members.cs["cluster-3"].kube
        await k3.create(kube.SERVICES, hello_service(namespace))
        await k3.create(kube.SERVICE_EXPORTS, hello_export(namespace))
        await k3.create(
            kube.ENDPOINT_SLICES, endpoint_slice(namespace, "hello", "hello-3", ["10.3.0.1"])
        )
        await eventually(lambda: everywhere(members, namespace, 2), timeout=30)
        await asyncio.sleep(1.5)
        mine = await snapshot(members, "cluster-3", namespace)

        await cut.cut()
        # Elsewhere, the log shows cluster-3 silent while others heartbeat: after its lease its
        # endpoints leave the other clusters (the staleness policy), cluster-1's stay.
        for c in ("cluster-1", "cluster-2"):
            await eventually(
                functools.partial(_endpoints_from, members, c, namespace, "cluster-3", 0),
                timeout=LEASE + 10,
            )
            assert await _endpoints_from(members, c, namespace, "cluster-1", 1)
        # cluster-3 itself sees no log at all: it withdraws nothing, for many leases.
        await held(members, namespace, {"cluster-3": mine}, 4 * LEASE, interval=0.5)

        await cut.heal()
        await eventually(lambda: everywhere(members, namespace, 2), timeout=30)
    finally:
        await cut.stop()


async def _endpoints_from(members: Members, cluster: str, ns: str, source: str, count: int) -> bool:
    slices = await mcs_slices(members.cs, cluster, ns)
    n = sum(
        len(s.get("endpoints") or [])
        for s in slices
        if s["metadata"]["labels"].get("multicluster.kubernetes.io/source-cluster") == source
    )
    return n == count


async def test_a_member_started_while_nats_is_away_waits_for_it(
    members: Members, hub: NatsServer
) -> None:
    members.cs = ClusterSet(members.cs.clusters, members.cs.local, hub, members.cs.by_name)
    hub.stop()
    m = members.new("cluster-1", **FAST)
    starting = asyncio.create_task(m.start())
    try:
        await asyncio.sleep(3.0)
        assert not starting.done(), "start gave up while NATS was away"
        reason = m.not_ready_because()
        assert reason is not None and "NATS" in reason
        await hub.restart()
        await asyncio.wait_for(starting, 30)
        await m.wait_ready(30)
        assert m.is_ready()
    finally:
        starting.cancel()
        await m.stop()


async def test_a_three_node_hub_losing_a_node_changes_nothing(
    members: Members, namespace: str
) -> None:
    async with NatsCluster(3) as cluster:
        url = ",".join(cluster.urls)  # as --nats-url takes them
        for name in ("cluster-1", "cluster-2", "cluster-3"):
            m = members.new(name, **FAST, stream=jetstream.StreamSettings(replicas=3))
            m.nats_url = url
            await m.start()
            await m.wait_ready(60)
            members.members[name] = m
        await exported(members, namespace, "cluster-1", ["10.1.0.1"])
        await eventually(lambda: everywhere(members, namespace, 1), timeout=30)
        await asyncio.sleep(1.5)
        names = [c.name for c in members.cs.clusters]
        before = {c: await snapshot(members, c, namespace) for c in names}

        cluster.servers[0].stop()
        await held(members, namespace, before, 3 * LEASE, interval=0.5)
        # The two remaining nodes keep the log: a change still goes through.
        await members.cs["cluster-1"].kube.create(
            kube.ENDPOINT_SLICES, endpoint_slice(namespace, "hello", "hello-2", ["10.1.0.2"])
        )
        await eventually(lambda: everywhere(members, namespace, 2), timeout=30)
        await members.stop_all()


# --- the leaf layout with real processes ------------------------------------------------------

LEAF_SEEDS = {"cluster-1": bytes(range(100, 132)), "cluster-2": bytes(range(140, 172))}
LOGINS = {"cluster-1": "a", "cluster-2": "b", "cluster-3": "observer"}  # test-only hashes


@dataclasses.dataclass
class LeafSet:
    hub: NatsServer
    leaves: dict[str, NatsServer]
    links: dict[str, Cut]


@contextlib.asynccontextmanager
async def leaf_clusterset(
    members: Members, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leaves: tuple[str, ...]
) -> AsyncIterator[LeafSet]:
    """The rendered hub and a leaf server per cluster in ``leaves`` (its link to the hub through
    a proxy that can be cut); the other clusters connect to the hub directly. Streams provisioned
    with the admin's credentials; every cluster's member started in its layout."""
    from engine import natsconfig
    from tests.integration.test_nats_permissions import (
        HASHES,
        PASSWORDS,
        HubServer,
        LeafServer,
        ed25519_public,
        nkey_user_public,
        nkey_user_seed,
    )

    name = members.clusterset_name
    direct = [c for c in LOGINS if c not in leaves]
    hub_conf = natsconfig.Hub(
        clusterset=name,
        clusters={c: natsconfig.bcrypt_password(HASHES[LOGINS[c]]) for c in direct},
        admin=natsconfig.bcrypt_password(HASHES["admin"]),
        leaf_links={
            c: natsconfig.nkey(nkey_user_public(ed25519_public(LEAF_SEEDS[c]))) for c in leaves
        },
        leaf_advertise=False,  # leaves must go through their proxies, also when reconnecting
    )
    hub = HubServer(name="mcsync-hub", hub=hub_conf, store_dir=tmp_path / "hub")
    async with hub, contextlib.AsyncExitStack() as stack:
        links: dict[str, Cut] = {}
        servers: dict[str, NatsServer] = {}
        for c in leaves:
            env = f"MCSYNC_LEAF_NKEY_SEED_{c.upper().replace('-', '_')}"
            monkeypatch.setenv(env, nkey_user_seed(LEAF_SEEDS[c]))
            link = links[c] = Cut(hub.leaf_port)
            await link.start()
            stack.push_async_callback(link.stop)
            leaf_conf = natsconfig.Leaf(
                clusterset=name,
                cluster=c,
                hub_urls=(f"nats-leaf://127.0.0.1:{link.port}",),
                local=natsconfig.bcrypt_password(HASHES[LOGINS[c]]),
                admin=natsconfig.bcrypt_password(HASHES["admin"]),
                nkey_seed_env=env,
            )
            servers[c] = await stack.enter_async_context(
                LeafServer(name=f"mcsync-leaf-{c}", leaf=leaf_conf, store_dir=tmp_path / c)
            )
        settings = jetstream.StreamSettings()
        for server in (hub, *servers.values()):
            nc = await jetstream.connect(server.url, user="admin", password=PASSWORDS["admin"])
            try:
                if server is hub:
                    await jetstream.ensure_stream(nc.jetstream(), name, settings, leaves)
                else:
                    c = next(k for k, v in servers.items() if v is server)
                    route = jetstream.Route(name, c, "leaf")
                    await jetstream.ensure_leaf(nc.jetstream(), route, settings, "hub")
            finally:
                await nc.close()
        for c, login in LOGINS.items():
            leaf = servers.get(c)
            m = members.new(c, **FAST, create_stream=False, log_layout="leaf" if leaf else "hub")
            m.nats_url = (leaf or hub).url
            m.nats_user, m.nats_password = c, PASSWORDS[login]
            await m.start()
            await m.wait_ready(60)
            members.members[c] = m
        try:
            yield LeafSet(hub, servers, links)
        finally:
            await members.stop_all()


async def test_a_leaf_cut_off_from_the_hub_is_stale_elsewhere_and_keeps_everything_itself(
    members: Members, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cluster-1 on a leaf server of its own, whose link to the hub is cut; cluster-2 and
    cluster-3 on the hub."""
    async with leaf_clusterset(members, tmp_path, monkeypatch, ("cluster-1",)) as ls:
        await exported(members, namespace, "cluster-1", ["10.1.0.1"])
        await exported(members, namespace, "cluster-2", ["10.2.0.1"])
        await eventually(lambda: everywhere(members, namespace, 2), timeout=60)
        await asyncio.sleep(1.5)
        mine = await snapshot(members, "cluster-1", namespace)

        await ls.links["cluster-1"].cut()
        # On the hub's log cluster-1 falls silent while the others heartbeat: after the lease
        # its endpoints leave cluster-2 and cluster-3; cluster-2's stay.
        for c in ("cluster-2", "cluster-3"):
            await eventually(
                functools.partial(_endpoints_from, members, c, namespace, "cluster-1", 0),
                timeout=LEASE + 10,
            )
            assert await _endpoints_from(members, c, namespace, "cluster-2", 1)
        # cluster-1 reads its leaf's mirror, which stands still: it keeps everything, and a
        # change it makes meanwhile waits in its outbox.
        await members.cs["cluster-1"].kube.create(
            kube.ENDPOINT_SLICES, endpoint_slice(namespace, "hello", "hello-2", ["10.1.0.2"])
        )
        await held(members, namespace, {"cluster-1": mine}, 4 * LEASE, interval=0.5)

        await ls.links["cluster-1"].heal()
        await eventually(lambda: everywhere(members, namespace, 3), timeout=120)


async def test_the_hub_down_for_a_minute_in_the_leaf_layout_changes_nothing(
    members: Members, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clusters on leaves, one on the hub; the hub stops for a minute. Nothing changes
    anywhere during it (sampled every second), no process exits, and a change made on a leaf
    meanwhile reaches every cluster once the hub is back (within nats-server's source retry
    backoff: docs/deploy.md)."""
    async with leaf_clusterset(members, tmp_path, monkeypatch, ("cluster-1", "cluster-2")) as ls:
        await exported(members, namespace, "cluster-1", ["10.1.0.1", "10.1.0.2"])
        await eventually(lambda: everywhere(members, namespace, 2), timeout=60)
        await asyncio.sleep(1.5)
        await hub_down_changes_nothing(members, namespace, ls.hub)

        await ls.hub.restart()
        await eventually(lambda: everywhere(members, namespace, 3), timeout=120, interval=0.2)
