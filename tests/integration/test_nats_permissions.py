"""Per-cluster NATS permissions, against a real nats-server running the rendered hub config.

The server runs exactly what :func:`engine.natsconfig.render_hub` renders (listen addresses and
store moved to a temporary place), with bcrypt-hashed passwords; the least-privilege tests use
``NatsServer(extra_config=render_accounts(...))`` with one grant taken away at a time, and the
leaf tests add a leaf server running :func:`engine.natsconfig.render_leaf`. Tests talk to the
servers through :mod:`engine.eventlog`, as the publisher and subscriber do. A refused publish
gets no ack (the append times out) and the server reports ``Permissions Violation`` on the
connection, which ``jetstream.connect`` logs as ``nats.error``; the tests assert on both, and
on the log itself not holding the message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import os
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
import nats.errors
import nats.js.errors
import pytest
import structlog.testing
from nats.aio.client import Client as NATS
from nats.js import api
from structlog.typing import EventDict

from engine import jetstream, natsconfig
from engine.core import events as ev
from engine.core import subjects
from engine.core.errors import ConflictError, TransientError
from engine.core.fold import Envelope
from engine.local import natsserver, procs
from engine.local.natsserver import NatsServer

pytestmark = pytest.mark.integration

CLUSTERSET = "perms"
STREAM = subjects.stream_name(CLUSTERSET)
DLQ = jetstream.dead_letter_stream(CLUSTERSET)
Logs = list[EventDict]  # what structlog.testing.capture_logs collects
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEAF_SEED = bytes(range(100, 132))  # the raw seed of leaf a's nkey: test-only

# Test-only passwords and their bcrypt hashes (cost 4, so logins stay fast). Not secrets.
PASSWORDS = {
    "admin": "test-admin-pw",
    "a": "test-a-pw",
    "b": "test-b-pw",
    "observer": "test-observer-pw",
}
HASHES = {
    "admin": "$2b$04$GSaWCf6uYb3bovb1l5kNFumoAghxM.u3WZF2oD3QrKYLjV3gdhdJ6",
    "a": "$2b$04$e5XQwHg9aLPPY/O36eSz0.IJttyVdL.kQgDxfF.DpgZ.pTns7YE8m",
    "b": "$2b$04$QDerttkTvsuWoccdwArxm.4vASRJGs/9qQqxiMPjKtZO.TpdzzjXK",
    "observer": "$2b$04$66lx3lVwcueiLGHcHP5Y7eEpjlo7kLMJTNBw/QVa/xu4obacETUeq",
}


# --- nkey encoding (format only: enough for the server to accept a config) --------------------


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _encode(prefix: bytes, raw: bytes) -> str:
    data = prefix + raw
    text = base64.b32encode(data + _crc16(data).to_bytes(2, "little")).decode()
    return text.rstrip("=")


def nkey_user_public(raw: bytes) -> str:
    """A user public key in nkey encoding ('U...'), checksum included."""
    return _encode(bytes([20 << 3]), raw)


def nkey_user_seed(raw: bytes) -> str:
    """A user seed in nkey encoding ('SU...')."""
    seed, user = 18 << 3, 20 << 3
    return _encode(bytes([seed | (user >> 5), (user & 31) << 3]), raw)


_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_B = (
    15112221349535400772501151409588531511454012693041857206046113283949847762202,
    46316835694926478169428394003475163141307993866256225615783033603165251855960,
)


def _add(p: tuple[int, int], q: tuple[int, int]) -> tuple[int, int]:
    t = _D * p[0] * q[0] * p[1] * q[1] % _P
    x = (p[0] * q[1] + q[0] * p[1]) * pow(1 + t, _P - 2, _P) % _P
    y = (p[1] * q[1] + p[0] * q[0]) * pow(1 - t, _P - 2, _P) % _P
    return x, y


def ed25519_public(seed: bytes) -> bytes:
    """The Ed25519 public key of a 32-byte seed (RFC 8032, section 5.1.5), for nkey pairs.

    nats-py needs the ``nkeys`` package to sign with an nkey, but a leaf server signs by
    itself: a test only needs a matching pair, which this slow, plain version gives.
    """
    digest = hashlib.sha512(seed).digest()
    scalar = int.from_bytes(digest[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    acc, point = (0, 1), _B
    while scalar:
        if scalar & 1:
            acc = _add(acc, point)
        point = _add(point, point)
        scalar >>= 1
    x, y = acc
    return (y | (x & 1) << 255).to_bytes(32, "little")


# --- the server ------------------------------------------------------------------------------


@dataclasses.dataclass
class HubServer(NatsServer):
    """A nats-server whose whole configuration is ``natsconfig.render_hub(hub)``."""

    hub: natsconfig.Hub | None = None
    leaf_port: int = 0

    def _config(self) -> str:
        assert self.hub is not None and self.store_dir is not None
        self.leaf_port = self.leaf_port or procs.free_port()
        placed = dataclasses.replace(
            self.hub,
            listen=f"127.0.0.1:{self.port}",
            monitor=f"127.0.0.1:{self._monitor_port}",
            leafnode_listen=f"127.0.0.1:{self.leaf_port}",
            store_dir=str(self.store_dir / "js"),
        )
        return natsconfig.render_hub(placed)


@dataclasses.dataclass
class LeafServer(NatsServer):
    """A nats-server running ``natsconfig.render_leaf(leaf)``, plus ``extra_users`` if any."""

    leaf: natsconfig.Leaf | None = None
    extra_users: tuple[natsconfig.User, ...] = ()

    def _config(self) -> str:
        assert self.leaf is not None and self.store_dir is not None
        placed = dataclasses.replace(
            self.leaf,
            listen=f"127.0.0.1:{self.port}",
            monitor=f"127.0.0.1:{self._monitor_port}",
            store_dir=str(self.store_dir / "js"),
        )
        text = natsconfig.render_leaf(placed)
        if self.extra_users:
            users = [
                natsconfig.admin_user(CLUSTERSET, placed.admin),
                natsconfig.User(
                    placed.cluster,
                    placed.local,
                    natsconfig.leaf_local_permissions(CLUSTERSET, placed.cluster),
                ),
            ]
            accounts = natsconfig.render_accounts(users)
            assert accounts in text
            text = text.replace(accounts, natsconfig.render_accounts([*users, *self.extra_users]))
        return text


def hub_config() -> natsconfig.Hub:
    return natsconfig.Hub(
        clusterset=CLUSTERSET,
        clusters={
            "a": natsconfig.bcrypt_password(HASHES["a"]),
            "b": natsconfig.bcrypt_password(HASHES["b"]),
            # An nkey user: the server must accept the rendered entry (no login with it here).
            "c": natsconfig.nkey(nkey_user_public(bytes(range(1, 33)))),
        },
        admin=natsconfig.bcrypt_password(HASHES["admin"]),
        observer=natsconfig.bcrypt_password(HASHES["observer"]),
        leaf_links={"a": natsconfig.nkey(nkey_user_public(ed25519_public(LEAF_SEED)))},
    )


@pytest.fixture(scope="module")
async def hub() -> AsyncIterator[HubServer]:
    server = HubServer(name="mcsync-hub", hub=hub_config())
    async with server:
        nc = await jetstream.connect(server.url, user="admin", password=PASSWORDS["admin"])
        try:
            await jetstream.EventLog(nc, CLUSTERSET).ensure()
        finally:
            await nc.close()
        yield server


@pytest.fixture
def logs() -> Iterator[Logs]:
    """Captured structlog events; afterwards, no password may appear in any of them."""
    with structlog.testing.capture_logs() as captured:
        yield captured
    text = repr(captured)
    for password in PASSWORDS.values():
        assert password not in text


async def connect(server: NatsServer, user: str) -> NATS:
    return await jetstream.connect(
        server.url, name=f"test-{user}", user=user, password=PASSWORDS[user]
    )


@pytest.fixture
async def as_a(hub: HubServer) -> AsyncIterator[jetstream.EventLog]:
    nc = await connect(hub, "a")
    yield jetstream.EventLog(nc, CLUSTERSET, timeout=1.0, retry_for=1.0)
    await nc.close()


@pytest.fixture
async def as_b(hub: HubServer) -> AsyncIterator[jetstream.EventLog]:
    nc = await connect(hub, "b")
    yield jetstream.EventLog(nc, CLUSTERSET, timeout=1.0, retry_for=1.0)
    await nc.close()


@pytest.fixture
async def as_observer(hub: HubServer) -> AsyncIterator[jetstream.EventLog]:
    nc = await connect(hub, "observer")
    yield jetstream.EventLog(nc, CLUSTERSET, timeout=1.0, retry_for=1.0)
    await nc.close()


@pytest.fixture
async def as_admin(hub: HubServer) -> AsyncIterator[jetstream.EventLog]:
    nc = await connect(hub, "admin")
    yield jetstream.EventLog(nc, CLUSTERSET, timeout=1.0, retry_for=1.0)
    await nc.close()


# --- helpers ---------------------------------------------------------------------------------


def export(cluster: str, ns: str, name: str = "web", port: int = 80) -> ev.ExportUpserted:
    return ev.ExportUpserted(
        cluster=cluster,
        namespace=ns,
        name=name,
        uid=f"uid-{cluster}-{name}",
        created=T0,
        ports=(ev.Port(port=port, name="http"),),
    )


def fresh_ns() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def violation(logs: Logs, kind: str, subject: str) -> None:
    """Wait until a connection reported a permissions violation for ``subject``.

    ``kind`` is "publish" or "subscription", as in the server's message (which nats-py
    lower-cases).
    """
    needle = f'permissions violation for {kind} to "{subject}"'.lower()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(
            e.get("event") == "nats.error" and needle in str(e.get("error", "")).lower()
            for e in logs
        ):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no permissions violation reported for {subject}: {logs!r}")


async def messages(log: jetstream.EventLog, stream: str) -> int:
    info = await log.js.stream_info(stream)
    return int(info.state.messages)


# --- what a cluster may do -------------------------------------------------------------------


async def test_a_cluster_user_checks_the_stream_and_appends_on_its_own_subjects(
    as_a: jetstream.EventLog, logs: Logs
) -> None:
    ns = fresh_ns()
    subject = subjects.export(CLUSTERSET, "a", ns, "web")
    await as_a.require_stream()
    one = await as_a.append(jetstream.Append(subject, export("a", ns), expected_last_seq=0))
    two = await as_a.append(
        jetstream.Append(subject, export("a", ns, port=81), expected_last_seq=one)
    )
    assert await as_a.last_sequence(subject) == two
    last = await as_a.read_last_per_subject(subjects.cluster_subjects(CLUSTERSET, "a"))
    got = last[subject]
    assert isinstance(got, Envelope)
    assert got.seq == two
    assert not [e for e in logs if e.get("event") == "nats.error"]


async def test_a_lease_compare_and_set_across_clusters_works_within_own_subjects(
    as_a: jetstream.EventLog, as_b: jetstream.EventLog
) -> None:
    name = fresh_ns()
    scope = subjects.lease_any_cluster(CLUSTERSET, name)
    acquired = ev.LeaseAcquired(
        cluster="a", name=name, holder="a/pod-1", duration_seconds=15, token=0
    )
    seq = await as_a.append(
        jetstream.Append(subjects.lease(CLUSTERSET, "a", name), acquired, 0, expected_subject=scope)
    )
    # b reads the lease across every cluster's subject (a direct get with a wildcard) ...
    last = await as_b.read_last(scope)
    assert last is not None and last.seq == seq
    # ... and a stale compare-and-set from b is refused by the server, not by permissions.
    stale = msgspec.structs.replace(acquired, cluster="b", holder="b/pod-1")
    with pytest.raises(ConflictError):
        await as_b.append(
            jetstream.Append(
                subjects.lease(CLUSTERSET, "b", name), stale, 0, expected_subject=scope
            )
        )


async def test_a_cluster_follows_the_whole_log_from_the_last_event_per_subject(
    as_a: jetstream.EventLog, as_b: jetstream.EventLog
) -> None:
    ns = fresh_ns()
    b_subject = subjects.export(CLUSTERSET, "b", ns, "db")
    await as_b.append(jetstream.Append(b_subject, export("b", ns, "db"), expected_last_seq=0))
    seen: list[Envelope] = []
    follower = jetstream.Follower(as_a, "a", seen.append)
    await follower.start()
    try:
        await asyncio.wait_for(follower.caught_up.wait(), 10)
        assert b_subject in {e.subject for e in seen}
        later = subjects.export(CLUSTERSET, "b", ns, "cache")
        await as_b.append(jetstream.Append(later, export("b", ns, "cache"), expected_last_seq=0))
        deadline = time.monotonic() + 10
        while later not in {e.subject for e in seen}:
            assert time.monotonic() < deadline, "the new event was not delivered"
            await asyncio.sleep(0.02)
    finally:
        await follower.stop()
    assert follower.dead_letters == 0


async def test_an_undecodable_message_goes_to_the_clusters_own_dead_letter_subject(
    as_a: jetstream.EventLog, as_admin: jetstream.EventLog, as_observer: jetstream.EventLog
) -> None:
    ns = fresh_ns()
    bad = subjects.export(CLUSTERSET, "a", ns, "garbage")
    before = await messages(as_admin, DLQ)
    await as_a.js.publish(bad, b"not an event", stream=STREAM)
    follower = jetstream.Follower(as_a, "a", lambda env: None, filter_subjects=[bad])
    await follower.start()
    try:
        await asyncio.wait_for(follower.caught_up.wait(), 10)
    finally:
        await follower.stop()  # waits for the pending dead-letter publish
    assert follower.dead_letters == 1
    assert await messages(as_admin, DLQ) == before + 1
    dead = await as_admin.js.get_last_msg(DLQ, jetstream.dead_letter_subject(CLUSTERSET, "a"))
    assert dead.headers is not None and dead.headers["Mcsync-Dlq-Subject"] == bad
    # The observer may read the dead letters too.
    sub = await as_observer.js.subscribe(
        "",
        stream=DLQ,
        config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.LAST),
        ordered_consumer=True,
    )
    try:
        msg = await sub.next_msg(timeout=5)
        assert msg.subject == jetstream.dead_letter_subject(CLUSTERSET, "a")
    finally:
        await sub.unsubscribe()


# --- what a cluster may not do ---------------------------------------------------------------


async def test_a_cluster_cannot_append_on_another_clusters_subject(
    as_a: jetstream.EventLog, as_admin: jetstream.EventLog, logs: Logs
) -> None:
    ns = fresh_ns()
    spoof = subjects.export(CLUSTERSET, "b", ns, "x")
    with pytest.raises(TransientError):  # no ack ever comes
        await as_a.append(jetstream.Append(spoof, export("b", ns, "x"), expected_last_seq=0))
    await violation(logs, "publish", spoof)
    # A core publish (no ack wanted) is dropped just the same.
    core = subjects.export(CLUSTERSET, "b", ns, "y")
    await as_a.nc.publish(core, b"{}")
    await as_a.nc.flush()
    await violation(logs, "publish", core)
    assert await as_admin.last_sequence(spoof) == 0
    assert await as_admin.last_sequence(core) == 0


async def test_a_cluster_cannot_write_another_clusters_dead_letters(
    as_a: jetstream.EventLog, logs: Logs
) -> None:
    other = jetstream.dead_letter_subject(CLUSTERSET, "b")
    with pytest.raises(nats.errors.TimeoutError):
        await as_a.js.publish(other, b"spoof", timeout=1)
    await violation(logs, "publish", other)


async def test_a_cluster_cannot_create_update_delete_or_purge_the_stream(
    as_a: jetstream.EventLog, as_admin: jetstream.EventLog, logs: Logs
) -> None:
    ns = fresh_ns()
    await as_a.append(
        jetstream.Append(
            subjects.export(CLUSTERSET, "a", ns, "web"), export("a", ns), expected_last_seq=0
        )
    )
    before = await messages(as_admin, STREAM)
    info = await as_a.js.stream_info(STREAM)  # reading the config is allowed
    js = as_a.nc.jetstream(timeout=1)
    attempts = {
        f"$JS.API.STREAM.DELETE.{STREAM}": js.delete_stream(STREAM),
        f"$JS.API.STREAM.PURGE.{STREAM}": js.purge_stream(STREAM),
        f"$JS.API.STREAM.UPDATE.{STREAM}": js.update_stream(
            dataclasses.replace(info.config, deny_purge=False)
        ),
        f"$JS.API.STREAM.MSG.DELETE.{STREAM}": js.delete_msg(STREAM, 1),
        f"$JS.API.STREAM.DELETE.{DLQ}": js.delete_stream(DLQ),
        f"$JS.API.STREAM.CREATE.{STREAM}X": js.add_stream(
            api.StreamConfig(name=STREAM + "X", subjects=["elsewhere.>"])
        ),
    }
    # Refused requests are never answered: each one times out, all at once here.
    results = await asyncio.gather(*attempts.values(), return_exceptions=True)
    for subject, result in zip(attempts, results, strict=True):
        assert isinstance(result, nats.errors.TimeoutError), (subject, result)
        await violation(logs, "publish", subject)
    assert await messages(as_admin, STREAM) == before
    assert (await as_admin.js.stream_info(STREAM)).config.deny_purge


async def test_a_cluster_cannot_subscribe_to_the_log_subjects_directly(
    as_a: jetstream.EventLog, logs: Logs
) -> None:
    wildcard = subjects.all_subjects(CLUSTERSET)
    await as_a.nc.subscribe(wildcard)
    await as_a.nc.flush()
    await violation(logs, "subscription", wildcard)


async def test_a_consumer_cannot_deliver_into_another_clusters_subjects(
    as_a: jetstream.EventLog, as_admin: jetstream.EventLog
) -> None:
    """The deliver subject is in the request body, out of reach of subject permissions."""
    ns = fresh_ns()
    await as_a.append(
        jetstream.Append(
            subjects.export(CLUSTERSET, "a", ns, "web"), export("a", ns), expected_last_seq=0
        )
    )
    js = as_a.nc.jetstream(timeout=2)

    def push(deliver: str) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            deliver_subject=deliver, ack_policy=api.AckPolicy.NONE, inactive_threshold=5
        )

    # Into the stream's own subjects: refused by the server (a delivery cycle).
    with pytest.raises(nats.js.errors.BadRequestError):
        await js.add_consumer(STREAM, push(subjects.export(CLUSTERSET, "b", ns, "z")))
    # Into another cluster's dead-letter subject, or onto a JetStream API subject: accepted,
    # but nothing lands there and no API request is made of it.
    dlq_before = await messages(as_admin, DLQ)
    await js.add_consumer(STREAM, push(jetstream.dead_letter_subject(CLUSTERSET, "b")))
    await js.add_consumer(STREAM, push(f"$JS.API.STREAM.DELETE.{DLQ}"))
    await js.add_consumer(STREAM, push(f"$JS.API.STREAM.PURGE.{STREAM}"))
    stream_before = await messages(as_admin, STREAM)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert await messages(as_admin, DLQ) == dlq_before
        assert await messages(as_admin, STREAM) >= stream_before
        await asyncio.sleep(0.1)


async def test_a_cluster_follows_a_large_backlog_by_answering_flow_control(
    as_a: jetstream.EventLog, as_b: jetstream.EventLog, logs: Logs
) -> None:
    ns = fresh_ns()
    await as_b.append_many(big_backlog("b", ns))
    seen: list[Envelope] = []
    follower = jetstream.Follower(
        as_a, "a", seen.append, filter_subjects=[f"mcsync.{CLUSTERSET}.b.export.{ns}.>"]
    )
    await follower.start()
    try:
        await asyncio.wait_for(follower.caught_up.wait(), 10)
    finally:
        await follower.stop()
    assert len(seen) == BACKLOG
    assert not [e for e in logs if e.get("event") == "nats.error"]


# --- least privilege: every grant is used -----------------------------------------------------

BACKLOG = 30


def big_backlog(cluster: str, ns: str) -> list[jetstream.Append]:
    """About 6 MB of events: enough for the server to ask an ordered consumer for flow control."""
    annotations = {"padding": "x" * 200_000}
    return [
        jetstream.Append(
            subjects.export(CLUSTERSET, cluster, ns, f"s{i}"),
            msgspec.structs.replace(export(cluster, ns, f"s{i}"), exported_annotations=annotations),
            expected_last_seq=0,
        )
        for i in range(BACKLOG)
    ]


async def exercise(server: NatsServer) -> list[str]:
    """Run every log call a cluster's processes make, as cluster ``a``; return what failed."""
    admin = await connect(server, "admin")
    writer = await connect(server, "b")
    a = await connect(server, "a")
    failed: list[str] = []

    async def step(name: str, coro: Any, timeout: float = 2.5) -> None:
        if failed:  # one failure answers the question; skip the rest
            coro.close()
            return
        try:
            await asyncio.wait_for(coro, timeout)
        except Exception:
            failed.append(name)

    try:
        admin_log = jetstream.EventLog(admin, CLUSTERSET)
        await admin_log.ensure()
        ns = fresh_ns()
        b_log = jetstream.EventLog(writer, CLUSTERSET)
        await b_log.append_many(big_backlog("b", ns))
        await writer.jetstream().publish(
            subjects.export(CLUSTERSET, "b", ns, "garbage"), b"not an event", stream=STREAM
        )
        log = jetstream.EventLog(a, CLUSTERSET, timeout=1.0, retry_for=0.5)
        own = subjects.export(CLUSTERSET, "a", ns, "web")
        await step("require_stream", log.require_stream())
        await step("append", log.append(jetstream.Append(own, export("a", ns), 0)))
        await step("last_sequence", log.last_sequence(own))
        await step("read_last", log.read_last(subjects.export(CLUSTERSET, "*", ns, "web")))
        await step(
            "read_last_per_subject",
            log.read_last_per_subject(subjects.cluster_subjects(CLUSTERSET, "a")),
        )
        follower = jetstream.Follower(
            log, "a", lambda env: None, filter_subjects=[f"mcsync.{CLUSTERSET}.b.export.{ns}.>"]
        )

        async def follow() -> None:
            await follower.start()
            try:
                await follower.caught_up.wait()
            finally:
                await follower.stop()
            if await messages(admin_log, DLQ) == 0:
                raise AssertionError("the dead letter was not stored")

        await step("follow", follow(), timeout=5.0)
    finally:
        for nc in (a, writer, admin):
            await nc.close()
    return failed


def cluster_grants() -> list[tuple[str, str]]:
    p = natsconfig.cluster_permissions(CLUSTERSET, "a")
    return [("publish", g) for g in p.publish_allow] + [("subscribe", g) for g in p.subscribe_allow]


def server_with(a_permissions: natsconfig.Permissions) -> NatsServer:
    """A plain test server whose accounts block comes from ``render_accounts``."""
    bcrypt = natsconfig.bcrypt_password
    users = [
        natsconfig.admin_user(CLUSTERSET, bcrypt(HASHES["admin"])),
        natsconfig.User("a", bcrypt(HASHES["a"]), a_permissions),
        natsconfig.cluster_user(CLUSTERSET, "b", bcrypt(HASHES["b"])),
    ]
    return NatsServer(extra_config=natsconfig.render_accounts(users))


async def test_a_cluster_user_with_every_grant_can_make_every_log_call() -> None:
    async with server_with(natsconfig.cluster_permissions(CLUSTERSET, "a")) as server:
        assert await exercise(server) == []


@pytest.mark.parametrize(("side", "grant"), cluster_grants(), ids=str)
async def test_every_grant_of_a_cluster_user_is_needed(side: str, grant: str) -> None:
    full = natsconfig.cluster_permissions(CLUSTERSET, "a")
    # An empty allow-list would mean "no restriction" to the server: keep one unused entry.
    if side == "publish":
        rest = tuple(g for g in full.publish_allow if g != grant) or ("unused.subject",)
        fewer = dataclasses.replace(full, publish_allow=rest)
    else:
        rest = tuple(g for g in full.subscribe_allow if g != grant) or ("unused.subject",)
        fewer = dataclasses.replace(full, subscribe_allow=rest)
    with structlog.testing.capture_logs():  # the refusals are expected here
        async with server_with(fewer) as server:
            failed = await exercise(server)
    assert failed, f"without {side} {grant!r} every call still works: the grant is not needed"


# --- the observer and the admin --------------------------------------------------------------


async def test_the_observer_follows_the_log_but_cannot_publish(
    as_observer: jetstream.EventLog,
    as_b: jetstream.EventLog,
    as_admin: jetstream.EventLog,
    logs: Logs,
) -> None:
    ns = fresh_ns()
    subject = subjects.export(CLUSTERSET, "b", ns, "api")
    seq = await as_b.append(jetstream.Append(subject, export("b", ns, "api"), expected_last_seq=0))
    seen: list[Envelope] = []
    follower = jetstream.Follower(as_observer, "observer", seen.append)
    await follower.start()
    try:
        await asyncio.wait_for(follower.caught_up.wait(), 10)
    finally:
        await follower.stop()
    assert (subject, seq) in {(e.subject, e.seq) for e in seen}
    assert await as_observer.last_sequence(subject) == seq

    spoof = subjects.export(CLUSTERSET, "b", ns, "observer-was-here")
    with pytest.raises(TransientError):
        await as_observer.append(jetstream.Append(spoof, export("b", ns), expected_last_seq=None))
    await violation(logs, "publish", spoof)
    dead = jetstream.dead_letter_subject(CLUSTERSET, "b")
    with pytest.raises(nats.errors.TimeoutError):
        await as_observer.js.publish(dead, b"x", timeout=1)
    await violation(logs, "publish", dead)
    with pytest.raises(nats.errors.TimeoutError):
        await as_observer.nc.jetstream(timeout=1).purge_stream(STREAM)
    await violation(logs, "publish", f"$JS.API.STREAM.PURGE.{STREAM}")
    assert await as_admin.last_sequence(spoof) == 0


async def test_the_admin_provisions_streams_but_writes_no_events(
    as_admin: jetstream.EventLog, logs: Logs
) -> None:
    await as_admin.ensure()  # create-or-update is idempotent for the admin
    ns = fresh_ns()
    spoof = subjects.export(CLUSTERSET, "a", ns, "admin-was-here")
    with pytest.raises(TransientError):
        await as_admin.append(jetstream.Append(spoof, export("a", ns), expected_last_seq=0))
    await violation(logs, "publish", spoof)


async def test_no_password_reaches_the_server_log(hub: HubServer) -> None:
    text = hub.log_path.read_text()
    for password in PASSWORDS.values():
        assert password not in text


# --- the shipped examples --------------------------------------------------------------------


def check_config(text: str, tmp: str, env: dict[str, str] | None = None) -> str:
    path = os.path.join(tmp, "nats.conf")
    with open(path, "w") as f:
        f.write(text)
    result = subprocess.run(
        [natsserver.binary(), "-t", "-c", path],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return f"{result.returncode}: {result.stdout}{result.stderr}"


def without_tls(hub: natsconfig.Hub, tmp: str) -> natsconfig.Hub:
    return dataclasses.replace(hub, tls=None, leaf_tls=None, store_dir=tmp)


def test_the_example_hub_config_is_valid_for_the_server(tmp_path: Any) -> None:
    text = natsconfig.render_hub(without_tls(natsconfig.example_hub(), str(tmp_path)))
    out = check_config(text, str(tmp_path))
    assert out.startswith("0:") and "is valid" in out, out


def test_the_example_leaf_link_nkeys_are_refused_until_replaced(tmp_path: Any) -> None:
    hub = without_tls(natsconfig.example_hub(with_leafnodes=True), str(tmp_path))
    out = check_config(natsconfig.render_hub(hub), str(tmp_path))
    assert not out.startswith("0:") and "nkey" in out.lower(), out
    real = dataclasses.replace(
        hub,
        leaf_links={
            c: natsconfig.nkey(nkey_user_public(bytes([i]) * 32))
            for i, c in enumerate(natsconfig.EXAMPLE_CLUSTERS, start=1)
        },
    )
    out = check_config(natsconfig.render_hub(real), str(tmp_path))
    assert out.startswith("0:") and "is valid" in out, out


def test_the_example_leaf_config_is_valid_with_its_seed_in_the_environment(
    tmp_path: Any,
) -> None:
    text = natsconfig.examples()["leaf.conf"]
    text = re.sub(r"\n\s*tls \{[^}]*\}", "", text).replace("/data/jetstream", str(tmp_path))
    seed = nkey_user_seed(bytes(range(32)))
    out = check_config(text, str(tmp_path), {"MCSYNC_LEAF_NKEY_SEED": seed})
    assert out.startswith("0:") and "is valid" in out, out
    out = check_config(text, str(tmp_path), {"MCSYNC_LEAF_NKEY_SEED": ""})
    assert not out.startswith("0:"), out


# --- the leaf layout -------------------------------------------------------------------------
#
# A hub with a leafnode listener and a leaf server with its own JetStream domain, both running
# the rendered configs; the leaf authenticates with a real nkey. The streams are what an
# operator provisions for this layout: an outbox on the leaf, a source of it (with a subject
# transform) on the hub stream, and a mirror of the hub stream on the leaf.


def test_the_ed25519_helper_matches_rfc_8032() -> None:
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    expected = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert ed25519_public(seed).hex() == expected


@dataclasses.dataclass
class LeafLayout:
    hub: HubServer
    leaf: LeafServer
    hub_admin: NATS
    leaf_admin: NATS
    local: NATS
    """Cluster a's mcsync user on its leaf."""

    @property
    def outbox(self) -> str:
        return natsconfig.outbox_stream(CLUSTERSET, "a")

    @property
    def mirror(self) -> str:
        return natsconfig.mirror_stream(CLUSTERSET, "a")

    async def counts(self) -> tuple[int, int]:
        hub = await self.hub_admin.jetstream().stream_info(STREAM)
        mirror = await self.leaf_admin.jetstream().stream_info(self.mirror)
        return int(hub.state.messages), int(mirror.state.messages)

    async def reach(self, n: int, timeout: float) -> tuple[int, int]:
        """Wait until the hub stream and the mirror hold ``n`` messages; return the counts."""
        deadline = time.monotonic() + timeout
        counts = await self.counts()
        while counts != (n, n) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            counts = await self.counts()
        return counts


async def _leaf_connected(hub: HubServer) -> None:
    deadline = time.monotonic() + 10
    url = f"http://127.0.0.1:{hub._monitor_port}/leafz"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(url) as r:
                if (await r.json()).get("leafnodes"):
                    return
            await asyncio.sleep(0.05)
    raise AssertionError("the leaf did not connect to the hub")


@contextlib.asynccontextmanager
async def leaf_layout(
    monkeypatch: pytest.MonkeyPatch, extra_users: tuple[natsconfig.User, ...] = ()
) -> AsyncIterator[LeafLayout]:
    monkeypatch.setenv("MCSYNC_LEAF_NKEY_SEED", nkey_user_seed(LEAF_SEED))
    hub = HubServer(name="mcsync-hub", hub=hub_config())
    async with hub:
        leaf_config = natsconfig.Leaf(
            clusterset=CLUSTERSET,
            cluster="a",
            hub_urls=(f"nats-leaf://127.0.0.1:{hub.leaf_port}",),
            local=natsconfig.bcrypt_password(HASHES["a"]),
            admin=natsconfig.bcrypt_password(HASHES["admin"]),
        )
        leaf = LeafServer(name="mcsync-leaf-a", leaf=leaf_config, extra_users=extra_users)
        async with leaf:
            await _leaf_connected(hub)
            hub_admin = await connect(hub, "admin")
            leaf_admin = await connect(leaf, "admin")
            local = await connect(leaf, "a")
            layout = LeafLayout(hub, leaf, hub_admin, leaf_admin, local)
            try:
                await leaf_admin.jetstream().add_stream(
                    api.StreamConfig(
                        name=layout.outbox,
                        subjects=[natsconfig.outbox_subjects(CLUSTERSET, "a")],
                        storage=api.StorageType.FILE,
                    )
                )
                await jetstream.EventLog(hub_admin, CLUSTERSET).ensure()
                hub_js = hub_admin.jetstream()
                config = (await hub_js.stream_info(STREAM)).config
                config.sources = [
                    api.StreamSource(
                        name=layout.outbox,
                        external=api.ExternalStream(api="$JS.a.API"),
                        subject_transforms=[
                            api.SubjectTransform(
                                src=natsconfig.outbox_subjects(CLUSTERSET, "a"),
                                dest=subjects.cluster_subjects(CLUSTERSET, "a"),
                            )
                        ],
                    )
                ]
                await hub_js.update_stream(config)
                await leaf_admin.jetstream().add_stream(
                    api.StreamConfig(
                        name=layout.mirror,
                        storage=api.StorageType.FILE,
                        allow_direct=True,
                        mirror_direct=True,
                        mirror=api.StreamSource(
                            name=STREAM, external=api.ExternalStream(api="$JS.hub.API")
                        ),
                    )
                )
                yield layout
            finally:
                for nc in (local, leaf_admin, hub_admin):
                    await nc.close()


async def fill_outbox(layout: LeafLayout, count: int = BACKLOG) -> None:
    """About 6 MB into the outbox: enough to need flow control on both copies."""
    js = layout.local.jetstream()
    for i in range(count):
        subject = f"mcsyncout.{CLUSTERSET}.a.export.ns.s{i}"
        await js.publish(subject, b"x" * 200_000, stream=layout.outbox, timeout=5)


async def test_a_leaf_sources_its_outbox_into_the_hub_and_mirrors_the_hub_back(
    monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    async with leaf_layout(monkeypatch) as layout:
        await fill_outbox(layout)
        assert await layout.reach(BACKLOG, 20) == (BACKLOG, BACKLOG)
        # The hub holds them under the cluster's own subjects, with hub sequences, and the
        # cluster reads them back from its local mirror.
        hub_copy = await layout.hub_admin.jetstream().get_last_msg(
            STREAM, subjects.export(CLUSTERSET, "a", "ns", "s0")
        )
        local_copy = await layout.local.jetstream().get_last_msg(
            layout.mirror, subjects.export(CLUSTERSET, "a", "ns", "s0"), direct=True
        )
        assert local_copy.seq == hub_copy.seq
        # Locally, cluster a writes only its own outbox subjects.
        other = f"mcsyncout.{CLUSTERSET}.b.export.ns.x"
        await layout.local.publish(other, b"x")
        await layout.local.flush()
        await violation(logs, "publish", other)
        assert not [
            line
            for server in (layout.hub, layout.leaf)
            for line in server.log_path.read_text().splitlines()
            if "Violation" in line and "user:a" not in line
        ]


async def test_a_leaf_cannot_send_events_or_stream_requests_into_the_hub(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even a leaf user allowed everything locally gets nothing of that into the hub."""
    rogue = natsconfig.User(
        "rogue",
        natsconfig.bcrypt_password(HASHES["b"]),
        natsconfig.Permissions(publish_allow=(">",), subscribe_allow=(">",)),
    )
    async with leaf_layout(monkeypatch, extra_users=(rogue,)) as layout:
        await fill_outbox(layout, 1)
        assert await layout.reach(1, 20) == (1, 1)
        nc = await jetstream.connect(layout.leaf.url, user="rogue", password=PASSWORDS["b"])
        try:
            for subject in (
                subjects.export(CLUSTERSET, "b", "ns", "spoof"),
                subjects.export(CLUSTERSET, "a", "ns", "around-the-outbox"),
                jetstream.dead_letter_subject(CLUSTERSET, "b"),
            ):
                await nc.publish(subject, b"{}")
            await nc.flush()
            hub_api = nc.jetstream(domain="hub", timeout=1)
            refused = (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.js.errors.Error,
            )
            with pytest.raises(refused):
                await hub_api.purge_stream(STREAM)
            with pytest.raises(refused):
                await hub_api.delete_stream(STREAM)
            with pytest.raises(refused):
                await hub_api.delete_stream(DLQ)
        finally:
            await nc.close()
        await asyncio.sleep(0.5)  # give a leaked message time to land (it must not)
        hub_js = layout.hub_admin.jetstream()
        assert (await hub_js.stream_info(STREAM)).state.messages == 1
        assert (await hub_js.stream_info(DLQ)).state.messages == 0


def leaf_grants() -> list[tuple[str, str]]:
    p = natsconfig.leaf_link_permissions(CLUSTERSET, "a")
    return [("publish", g) for g in p.publish_allow] + [("subscribe", g) for g in p.subscribe_allow]


@pytest.mark.parametrize(("side", "grant"), leaf_grants(), ids=str)
async def test_every_grant_of_a_leaf_link_is_needed(
    monkeypatch: pytest.MonkeyPatch, side: str, grant: str
) -> None:
    full = natsconfig.leaf_link_permissions

    def fewer(clusterset: str, cluster: str, hub_domain: str = "hub") -> natsconfig.Permissions:
        p = full(clusterset, cluster, hub_domain)
        if side == "publish":
            return dataclasses.replace(
                p, publish_allow=tuple(g for g in p.publish_allow if g != grant)
            )
        return dataclasses.replace(
            p, subscribe_allow=tuple(g for g in p.subscribe_allow if g != grant)
        )

    monkeypatch.setattr(natsconfig.access, "leaf_link_permissions", fewer)
    async with leaf_layout(monkeypatch) as layout:
        await fill_outbox(layout)
        counts = await layout.reach(BACKLOG, 6)
        # The other use of the link: cluster a's lease events go straight to the log.
        leased = await _lease_through_the_link(layout)
    assert counts != (BACKLOG, BACKLOG) or not leased, (
        f"without {side} {grant!r} both copies completed and a lease reached the log"
    )


async def _lease_through_the_link(layout: LeafLayout) -> bool:
    """Whether cluster a, on its leaf, can append a lease event to the hub's log."""
    route = jetstream.Route(CLUSTERSET, "a", "leaf")
    nc = await jetstream.connect(
        layout.leaf.url, user="a", password=PASSWORDS["a"], inbox_prefix=route.inbox_prefix
    )
    log = jetstream.EventLog(nc, CLUSTERSET, timeout=1.0, retry_for=1.0, route=route)
    name = f"grant-{uuid.uuid4().hex[:8]}"
    event = ev.LeaseAcquired(cluster="a", name=name, holder="a-1", duration_seconds=5, token=1)
    try:
        await log.append(
            jetstream.Append(
                subjects.lease(CLUSTERSET, "a", name),
                event,
                0,
                expected_subject=subjects.lease_any_cluster(CLUSTERSET, name),
            )
        )
    except (TransientError, nats.errors.Error, TimeoutError):
        return False
    finally:
        await nc.close()
    return True
