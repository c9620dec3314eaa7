"""Cross-cluster leases on real NATS, checked on the recorded history: never two holders with
overlapping tenures, strictly increasing fencing tokens, failover within lease duration plus
renew interval; under a killed holder, a dropped connection, a server restart and a 3-node
cluster losing a server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from engine import jetstream, kube, leadership
from engine.core import leases, subjects
from engine.local.natsserver import NatsCluster, NatsServer
from tests.conftest import ClusterSet
from tests.integration.conftest import Members, eventually

pytestmark = pytest.mark.integration

TIMING = leases.Timing(duration=1.5, renew_deadline=1.0, renew_interval=0.25, retry_interval=0.05)
# Observing a change costs at most one retry interval, and a takeover one append.
FAILOVER_BOUND = TIMING.duration + TIMING.renew_interval + 0.5


@dataclass
class Tenure:
    identity: str
    token: int
    start: float
    end: float | None = None


@dataclass
class History:
    tenures: list[Tenure] = field(default_factory=list)

    def gained(self, identity: str, token: int) -> None:
        self.tenures.append(Tenure(identity, token, time.monotonic()))

    def lost(self, identity: str, token: int, at: float | None = None) -> None:
        for t in reversed(self.tenures):
            if t.identity == identity and t.token == token and t.end is None:
                t.end = at if at is not None else time.monotonic()
                return

    def crashed(self, identity: str) -> None:
        for t in self.tenures:
            if t.identity == identity and t.end is None:
                t.end = time.monotonic()

    def check(self) -> None:
        """The safety properties, on the whole history."""
        ordered = sorted(self.tenures, key=lambda t: t.start)
        for a, b in itertools.pairwise(ordered):
            assert a.end is not None, f"{a} still open when {b} began"
            assert a.end <= b.start, f"overlapping tenures: {a} and {b}"
            assert b.token > a.token, f"token did not increase: {a} then {b}"

    def holder(self) -> Tenure | None:
        open_ = [t for t in self.tenures if t.end is None]
        return open_[-1] if open_ else None


@dataclass
class Candidate:
    identity: str
    cluster: str
    nc: NATS
    elector: leadership.Elector
    task: asyncio.Task[None]


class Campaign:
    def __init__(self, urls: list[str], clusterset: str, name: str = "leader") -> None:
        self.urls = urls
        self.clusterset = clusterset
        self.name = name
        self.history = History()
        self.candidates: dict[str, Candidate] = {}

    async def add(self, identity: str, cluster: str) -> Candidate:
        nc = await jetstream.connect(self.urls, name=identity)
        log = jetstream.EventLog(nc, self.clusterset, timeout=1.0, retry_for=1.0)
        await log.ensure(jetstream.StreamSettings(replicas=len(self.urls)))
        h = self.history

        def gained(token: int) -> None:
            h.gained(identity, token)

        def lost(token: int) -> None:
            h.lost(identity, token, elector.lost_at)

        elector = leadership.Elector(
            log, cluster, self.name, identity, TIMING, on_gained=gained, on_lost=lost
        )
        c = Candidate(identity, cluster, nc, elector, asyncio.create_task(elector.run()))
        self.candidates[identity] = c
        return c

    async def kill(self, identity: str) -> None:
        """A crash: no release, no goodbye (the connection dies first)."""
        c = self.candidates.pop(identity)
        self.history.crashed(identity)
        c.elector.on_lost = None
        await jetstream.close(c.nc)
        c.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(c.task, 10)

    async def wait_holder(self, exclude: str | None = None, timeout: float = 10.0) -> Tenure:
        async def probe() -> Tenure | None:
            t = self.history.holder()
            return t if t is not None and t.identity != exclude else None

        return await eventually(probe, timeout=timeout, interval=0.01)

    async def stop(self) -> None:
        for identity in list(self.candidates):
            c = self.candidates.pop(identity)
            c.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(c.task, 10)
            await jetstream.close(c.nc)


@pytest.fixture
async def campaign(nats_server: NatsServer, clusterset_name: str) -> AsyncIterator[Campaign]:
    c = Campaign([nats_server.url], clusterset_name)
    try:
        yield c
    finally:
        await c.stop()


async def _spawn_six(c: Campaign) -> None:
    for i in range(6):
        await c.add(f"cand-{i}", f"cluster-{i % 3 + 1}")


async def test_one_holder_at_a_time_across_clusters_when_holders_are_killed(
    campaign: Campaign,
) -> None:
    await _spawn_six(campaign)
    failovers = []
    for _ in range(4):
        holder = await campaign.wait_holder()
        await asyncio.sleep(0.6)  # a few renewals
        killed_at = time.monotonic()
        await campaign.kill(holder.identity)
        nxt = await campaign.wait_holder(exclude=holder.identity)
        failovers.append(nxt.start - killed_at)
    campaign.history.check()
    assert max(failovers) <= FAILOVER_BOUND, failovers
    tokens = [t.token for t in sorted(campaign.history.tenures, key=lambda t: t.start)]
    assert tokens == sorted(set(tokens))
    assert all(t < 2**31 for t in tokens)


async def test_a_released_lease_passes_on_at_once(campaign: Campaign) -> None:
    await _spawn_six(campaign)
    holder = await campaign.wait_holder()
    released_at = time.monotonic()
    c = campaign.candidates.pop(holder.identity)
    c.task.cancel()  # run() releases on cancel
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(c.task, 10)
    await jetstream.close(c.nc)
    nxt = await campaign.wait_holder(exclude=holder.identity)
    assert nxt.start - released_at < TIMING.duration  # no need to wait out the lease
    campaign.history.check()


async def test_a_holder_cut_off_from_nats_steps_down_before_another_takes_over(
    campaign: Campaign,
) -> None:
    await _spawn_six(campaign)
    holder = await campaign.wait_holder()
    c = campaign.candidates[holder.identity]
    await c.nc.close()  # the connection drops; the elector keeps running
    nxt = await campaign.wait_holder(exclude=holder.identity)
    cut = next(t for t in campaign.history.tenures if t.identity == holder.identity)
    assert cut.end is not None and cut.end <= nxt.start
    campaign.history.check()


async def test_leases_survive_a_nats_server_restart(clusterset_name: str, tmp_path: Path) -> None:
    async with NatsServer(store_dir=tmp_path / "nats") as server:
        c = Campaign([server.url], clusterset_name)
        try:
            await _spawn_six(c)
            first = await c.wait_holder()
            await server.restart()
            await asyncio.sleep(TIMING.duration)
            holder = await c.wait_holder(timeout=30)
            c.history.check()
            assert holder.token >= first.token
        finally:
            await c.stop()


async def test_leases_survive_a_three_node_cluster_losing_a_server(clusterset_name: str) -> None:
    async with NatsCluster(3) as cluster:
        c = Campaign(cluster.urls, clusterset_name)
        try:
            await _spawn_six(c)
            await c.wait_holder(timeout=30)
            nc = await nats.connect(cluster.urls)
            info = await nc.jetstream().stream_info(subjects.stream_name(clusterset_name))
            await nc.close()
            leader_name = info.cluster.leader if info.cluster else None
            victim = next(s for s in cluster.servers if s.name == leader_name)
            victim.stop()
            await asyncio.sleep(TIMING.duration * 2)
            await c.wait_holder(timeout=30)
            # The lease keeps changing hands safely after the stream moved to a new leader.
            holder = c.history.holder()
            assert holder is not None
            await c.kill(holder.identity)
            await c.wait_holder(exclude=holder.identity, timeout=30)
            c.history.check()
        finally:
            await c.stop()


async def test_the_lease_is_visible_as_a_kubernetes_lease_in_every_cluster(
    members: Members, campaign: Campaign
) -> None:
    cs: ClusterSet = members.cs
    await asyncio.gather(*(members.start(c.name, publish=False) for c in cs.clusters))
    await campaign.add("cand-a", "cluster-2")
    holder = await campaign.wait_holder()

    async def views() -> list[kube.Obj] | None:
        got = [await c.kube.get(kube.LEASES, "mcsync-system", "leader") for c in cs.clusters]
        held = [g for g in got if g and (g.get("spec") or {}).get("holderIdentity")]
        return held if len(held) == len(got) else None

    got = await eventually(views)
    for lease in got:
        spec = lease["spec"]
        assert spec["holderIdentity"] == "cand-a"
        assert spec["leaseTransitions"] == holder.token
        assert spec["leaseDurationSeconds"] == 2  # 1.5 s rounded
        assert spec["acquireTime"] and spec["renewTime"]


async def test_lease_run_runs_the_command_only_while_leading(
    nats_server: NatsServer, clusterset_name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "leaders.txt"
    script = f"echo $MCSYNC_LEASE_HOLDER $MCSYNC_LEASE_TOKEN >> {marker}; exec sleep 60"

    def start(identity: str, cluster: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable, "-m", "engine", "lease", "run", "job",
                "--identity", identity, "--cluster", cluster,
                "--nats-url", nats_server.url, "--clusterset", clusterset_name,
                "--duration", "1.5", "--renew-deadline", "1.0", "--renew-interval", "0.25",
                "--grace", "2", "--log-level", "warning",
                "--", "sh", "-c", script,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ),
        )  # fmt: skip

    a = start("alpha", "cluster-1")
    b = None
    try:
        await eventually(lambda: _lines(marker, 1), timeout=20)
        b = start("beta", "cluster-2")
        await asyncio.sleep(1.0)
        assert _read(marker) == ["alpha 1"]  # beta waits while alpha leads
        a.send_signal(signal.SIGTERM)  # alpha stops its command and releases
        assert a.wait(10) == 0
        await eventually(lambda: _lines(marker, 2), timeout=10)
        assert _read(marker) == ["alpha 1", "beta 2"]
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)


def _read(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _lines(path: Path, n: int) -> bool:
    return len(_read(path)) >= n
