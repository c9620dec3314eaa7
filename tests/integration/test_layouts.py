"""The mirror and leaf layouts at the log, on real nats-servers running the rendered configs.

Mirror layout: each cluster's user in an account of its own on the hub, reading a mirror of the
log there; what a cluster creates in its account (5,000 consumers, say) stops at that account's
limits. Leaf layout: a cluster's processes on a leaf server with its own JetStream domain, writing
the leaf's outbox (sourced by the hub) and reading the leaf's mirror; leases go to the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js import api

from engine import jetstream, leadership, natsconfig
from engine.core import events as ev
from engine.core import leases, subjects
from engine.core.errors import ConflictError, TransientError
from engine.core.fold import Envelope
from tests.integration.test_nats_permissions import (
    CLUSTERSET,
    HASHES,
    LEAF_SEED,
    PASSWORDS,
    STREAM,
    HubServer,
    LeafServer,
    _leaf_connected,
    connect,
    export,
    fresh_ns,
    hub_config,
    nkey_user_seed,
)

pytestmark = pytest.mark.integration

CONSUMER_LIMIT = 32


def mirror_hub() -> natsconfig.Hub:
    return dataclasses.replace(
        hub_config(),
        mirrors=True,
        cluster_limits=natsconfig.AccountLimits(max_consumers=CONSUMER_LIMIT),
    )


@contextlib.asynccontextmanager
async def mirror_server() -> AsyncIterator[HubServer]:
    server = HubServer(name="mcsync-hub-mirrors", hub=mirror_hub())
    async with server:
        nc = await connect(server, "admin")
        try:
            await jetstream.EventLog(nc, CLUSTERSET).ensure()
        finally:
            await nc.close()
        yield server


@pytest.fixture(scope="module")
async def mhub() -> AsyncIterator[HubServer]:
    async with mirror_server() as server:
        yield server


@pytest.fixture
async def own_mhub() -> AsyncIterator[HubServer]:
    """A hub of the test's own: an attack's leftovers stay with it."""
    async with mirror_server() as server:
        yield server


@contextlib.asynccontextmanager
async def mirrored(server: HubServer, cluster: str) -> AsyncIterator[jetstream.EventLog]:
    """Cluster ``cluster``'s log in the mirror layout; its mirror provisioned by itself."""
    nc = await connect(server, cluster)
    try:
        log = jetstream.EventLog(
            nc,
            CLUSTERSET,
            timeout=2.0,
            retry_for=2.0,
            route=jetstream.Route(CLUSTERSET, cluster, "mirror"),
        )
        await log.ensure()
        yield log
    finally:
        await nc.close()


async def follow(
    log: jetstream.EventLog, cluster: str
) -> tuple[jetstream.Follower, list[Envelope]]:
    seen: list[Envelope] = []
    follower = jetstream.Follower(log, cluster, seen.append)
    await follower.start()
    await asyncio.wait_for(follower.caught_up.wait(), 10)
    return follower, seen


async def until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


# --- mirror layout -----------------------------------------------------------------------------


async def test_mirror_layout_appends_reach_the_log_and_each_cluster_reads_its_own_mirror(
    mhub: HubServer,
) -> None:
    ns = fresh_ns()
    async with mirrored(mhub, "a") as a, mirrored(mhub, "b") as b:
        assert a.stream == natsconfig.mirror_stream(CLUSTERSET, "a")
        subject = subjects.export(CLUSTERSET, "a", ns, "web")
        seq = await a.append(jetstream.Append(subject, export("a", ns), 0))
        # Read-your-writes through the mirror: the head is there at once.
        assert await a.last_sequence(subject) == seq
        second = await a.append(jetstream.Append(subject, export("a", ns, port=81), seq))
        with pytest.raises(ConflictError):
            await a.append(jetstream.Append(subject, export("a", ns, port=82), seq))
        follower, seen = await follow(b, "b")
        try:
            await until(lambda: any(e.subject == subject for e in seen))
            got = [e for e in seen if e.subject == subject]
            assert got[-1].seq == second  # the mirror keeps the log's sequences
            assert got[-1].event == export("a", ns, port=81)
        finally:
            await follower.stop()
        admin = await connect(mhub, "admin")
        try:
            hub_copy = await admin.jetstream().get_last_msg(STREAM, subject)
            assert hub_copy.seq == second
        finally:
            await admin.close()


async def test_a_cluster_exhausting_its_consumers_starves_only_itself(
    own_mhub: HubServer,
) -> None:
    mhub = own_mhub
    ns = fresh_ns()
    async with mirrored(mhub, "a") as a, mirrored(mhub, "b") as b:
        admin = await connect(mhub, "admin")
        try:
            log_consumers = (await admin.jetstream().stream_info(STREAM)).state.consumer_count
            # The attack of the issue: as many consumers as fast as possible.
            created, refused = 0, None
            for _ in range(5000):
                try:
                    await b.js.add_consumer(
                        b.stream,
                        api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, inactive_threshold=3600),
                    )
                    created += 1
                except nats.js.errors.APIError as exc:
                    refused = exc
                    break
            assert refused is not None and refused.err_code == 10026, refused
            assert created <= CONSUMER_LIMIT
            # Around its account: consumer creation on the log itself is not b's to call.
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await b.nc.request(
                    f"{natsconfig.LOG_API}.CONSUMER.CREATE.{STREAM}",
                    b'{"stream_name": "%s", "config": {}}' % STREAM.encode(),
                    timeout=1,
                )
            assert (
                await admin.jetstream().stream_info(STREAM)
            ).state.consumer_count == log_consumers
        finally:
            await admin.close()
        # Cluster a is untouched: it follows, appends, and sees its append.
        follower, seen = await follow(a, "a")
        try:
            subject = subjects.export(CLUSTERSET, "a", ns, "web")
            seq = await a.append(jetstream.Append(subject, export("a", ns), 0))
            await until(lambda: any(e.seq == seq for e in seen))
        finally:
            await follower.stop()
        # b's own appends still land (its writes do not need a consumer); only its reads of
        # new consumers are refused, by its own limit.
        b_subject = subjects.export(CLUSTERSET, "b", ns, "web")
        await b.append(jetstream.Append(b_subject, export("b", ns), 0))


async def test_a_cluster_cannot_write_another_clusters_subjects_in_the_mirror_layout(
    mhub: HubServer,
) -> None:
    ns = fresh_ns()
    async with mirrored(mhub, "b") as b:
        admin = await connect(mhub, "admin")
        try:
            before = (await admin.jetstream().stream_info(STREAM)).state.messages
            for subject in (
                subjects.export(CLUSTERSET, "a", ns, "spoof"),
                natsconfig.dead_letter_subject(CLUSTERSET, "a"),
            ):
                await b.nc.publish(subject, b"{}")
            await b.nc.flush()
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await b.nc.request(f"$JS.API.STREAM.DELETE.{b.stream}", b"", timeout=1)
            await asyncio.sleep(0.3)
            assert (await admin.jetstream().stream_info(STREAM)).state.messages == before
        finally:
            await admin.close()


async def test_a_mirror_copies_a_large_backlog(mhub: HubServer) -> None:
    """About 6 MB: the mirror's consumer on the log needs flow control through the imports."""
    ns = fresh_ns()
    async with mirrored(mhub, "a") as a, mirrored(mhub, "b") as b:
        for i in range(30):
            await a.js.publish(
                subjects.export(CLUSTERSET, "a", ns, f"big{i}"), b"x" * 200_000, timeout=5
            )
        admin = await connect(mhub, "admin")
        try:
            last = (await admin.jetstream().stream_info(STREAM)).state.last_seq
        finally:
            await admin.close()
        await b.caught_up(last, within=20)
        read = [
            r
            async for r in b.replay(filter_subjects=[subjects.cluster_subjects(CLUSTERSET, "a")])
            if r.subject.startswith(f"mcsync.{CLUSTERSET}.a.export.{ns}.")
        ]
        assert len(read) == 30


# --- leaf layout -------------------------------------------------------------------------------


@dataclasses.dataclass
class Leafy:
    hub: HubServer
    leaf: LeafServer
    a: jetstream.EventLog
    """Cluster a on its leaf (leaf layout)."""
    b: jetstream.EventLog
    """Cluster b connected to the hub directly (hub layout)."""
    hub_admin: NATS


@contextlib.asynccontextmanager
async def leaf_set(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> AsyncIterator[Leafy]:
    monkeypatch.setenv("MCSYNC_LEAF_NKEY_SEED", nkey_user_seed(LEAF_SEED))
    hub = HubServer(name="mcsync-hub", hub=hub_config())
    async with hub:
        leaf = LeafServer(
            name="mcsync-leaf-a",
            leaf=natsconfig.Leaf(
                clusterset=CLUSTERSET,
                cluster="a",
                hub_urls=(f"nats-leaf://127.0.0.1:{hub.leaf_port}",),
                local=natsconfig.bcrypt_password(HASHES["a"]),
                admin=natsconfig.bcrypt_password(HASHES["admin"]),
            ),
        )
        async with leaf:
            await _leaf_connected(hub)
            hub_admin = await connect(hub, "admin")
            leaf_admin = await connect(leaf, "admin")
            route = jetstream.Route(CLUSTERSET, "a", "leaf")
            na = await jetstream.connect(
                leaf.url, user="a", password=PASSWORDS["a"], inbox_prefix=route.inbox_prefix
            )
            nb = await connect(hub, "b")
            try:
                settings = jetstream.StreamSettings()
                for _ in range(2):  # idempotent, both sides
                    await jetstream.ensure_stream(
                        hub_admin.jetstream(), CLUSTERSET, settings, ("a",)
                    )
                    await jetstream.ensure_leaf(leaf_admin.jetstream(), route, settings, "hub")
                a = jetstream.EventLog(na, CLUSTERSET, timeout=2.0, retry_for=2.0, route=route)
                await a.require_stream()
                b = jetstream.EventLog(nb, CLUSTERSET, timeout=2.0, retry_for=2.0)
                yield Leafy(hub, leaf, a, b, hub_admin)
            finally:
                for nc in (na, nb, leaf_admin, hub_admin):
                    await nc.close()


async def test_the_leaf_layout_end_to_end_at_the_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    ns = fresh_ns()
    async with leaf_set(monkeypatch, tmp_path) as s:
        a_subject = subjects.export(CLUSTERSET, "a", ns, "web")
        b_subject = subjects.export(CLUSTERSET, "b", ns, "web")
        first = await s.a.append(jetstream.Append(a_subject, export("a", ns), 0))
        # Compare-and-set against the outbox, where a alone writes its subjects.
        assert await s.a.last_sequence(a_subject) == first
        with pytest.raises(ConflictError):
            await s.a.append(jetstream.Append(a_subject, export("a", ns, port=81), 0))
        mine = await s.a.read_last_per_subject(subjects.cluster_subjects(CLUSTERSET, "a"))
        got = mine[a_subject]
        assert isinstance(got, Envelope) and got.event == export("a", ns)
        await s.b.append(jetstream.Append(b_subject, export("b", ns), 0))
        # b, on the hub, sees a's event under a's own log subject; a sees both on its mirror.
        b_follower, b_seen = await follow(s.b, "b")
        a_follower, a_seen = await follow(s.a, "a")
        try:
            await until(lambda: any(e.subject == a_subject for e in b_seen))
            await until(lambda: {a_subject, b_subject} <= {e.subject for e in a_seen})
            hub_seq = next(e.seq for e in b_seen if e.subject == a_subject)
            assert next(e.seq for e in a_seen if e.subject == a_subject) == hub_seq

            # The hub goes away: a keeps appending to its outbox and reading its mirror.
            s.hub.stop()
            t0 = time.monotonic()
            during = await s.a.append(jetstream.Append(a_subject, export("a", ns, port=82), first))
            assert time.monotonic() - t0 < 2.0
            assert await s.a.last_sequence(a_subject) == during
            assert a_follower.processed_seq >= hub_seq  # nothing withdrawn, nothing replaced
            await s.hub.restart()
            back = time.monotonic()
            await until(
                lambda: any(
                    e.subject == a_subject and e.event == export("a", ns, port=82) for e in b_seen
                ),
                timeout=60,
            )
            # nats-server retries the hub's source of the outbox with a growing backoff (10 s,
            # 20 s, ...) while the leaf link is not back yet: about 40 s here (docs/deploy.md).
            assert time.monotonic() - back < 60
            await until(
                lambda: any(
                    e.subject == a_subject and e.event == export("a", ns, port=82) for e in a_seen
                ),
                timeout=30,
            )
        finally:
            await a_follower.stop()
            await b_follower.stop()


async def test_leases_in_the_leaf_layout_see_every_cluster_and_never_two_holders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    timing = leases.Timing(duration=3.0, renew_deadline=2.0, renew_interval=0.4, retry_interval=0.2)
    name = f"lease-{fresh_ns()}"
    async with leaf_set(monkeypatch, tmp_path) as s:
        ea = leadership.Elector(s.a, "a", name, "a-1", timing)
        eb = leadership.Elector(s.b, "b", name, "b-1", timing)
        tasks = [asyncio.create_task(e.run()) for e in (ea, eb)]
        try:
            await until(lambda: ea.is_leader() or eb.is_leader(), timeout=15)
            overlap = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < 3.0:
                overlap += ea.is_leader() and eb.is_leader()
                await asyncio.sleep(0.02)
            assert overlap == 0
            # The lease event is on the log (the hub), under the holder's own subject.
            holder = "a" if ea.is_leader() else "b"
            last = await s.hub_admin.jetstream().get_last_msg(
                STREAM, subjects.lease(CLUSTERSET, holder, name)
            )
            assert last.seq
            # With the hub away nobody can be elected; a leaf holder steps down at its deadline.
            s.hub.stop()
            t0 = time.monotonic()
            while time.monotonic() - t0 < timing.duration + 1.0:
                assert not (ea.is_leader() and eb.is_leader())
                await asyncio.sleep(0.05)
            assert not ea.is_leader() and not eb.is_leader()
            await s.hub.restart()
            await until(lambda: ea.is_leader() or eb.is_leader(), timeout=30)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.0:
                assert not (ea.is_leader() and eb.is_leader())
                await asyncio.sleep(0.02)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_leaf_user_cannot_write_another_clusters_leases_into_the_hub(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    async with leaf_set(monkeypatch, tmp_path) as s:
        before = (await s.hub_admin.jetstream().stream_info(STREAM)).state.messages
        forged = ev.LeaseAcquired(
            cluster="b", name="x", holder="evil", duration_seconds=10, token=1
        )
        log = jetstream.EventLog(
            s.a.nc,
            CLUSTERSET,
            timeout=1.0,
            retry_for=1.0,
        )
        with pytest.raises((TransientError, nats.errors.Error, TimeoutError)):
            await log.append(jetstream.Append(subjects.lease(CLUSTERSET, "b", "x"), forged, 0))
        await asyncio.sleep(0.3)
        assert (await s.hub_admin.jetstream().stream_info(STREAM)).state.messages == before


async def test_after_a_hub_restart_the_mirrors_follow_the_log_again_within_seconds() -> None:
    ns = fresh_ns()
    async with (
        mirror_server() as server,
        mirrored(server, "a") as a,
        mirrored(server, "b") as b,
    ):
        subject = subjects.export(CLUSTERSET, "a", ns, "web")
        seq = await a.append(jetstream.Append(subject, export("a", ns), 0))
        await b.caught_up(seq)
        server.stop()
        await server.restart()
        back = time.monotonic()
        again = None
        while again is None:
            try:
                again = await a.append(jetstream.Append(subject, export("a", ns, port=81), seq))
            except TransientError:
                await asyncio.sleep(0.05)
        await b.caught_up(again, within=30)
        assert time.monotonic() - back < 5.0


async def test_status_reads_a_clusters_copy_of_the_log_in_the_mirror_layout(
    mhub: HubServer,
) -> None:
    from datetime import timedelta

    from engine import status

    ns = fresh_ns()
    async with mirrored(mhub, "a") as a:
        subject = subjects.export(CLUSTERSET, "a", ns, "web")
        seq = await a.append(jetstream.Append(subject, export("a", ns), 0))
        await a.caught_up(seq)
        report, state = await status.collect(a, timedelta(seconds=30))
        assert report.stream is not None
        assert report.stream["name"] == natsconfig.mirror_stream(CLUSTERSET, "a")
        assert report.stream["mirror"] == STREAM
        assert report.stream["last_seq"] >= seq
        assert "a" in state.exports[(ns, "web")]
