"""A broken or hostile cluster against the rest: what it publishes on its own subjects, with any
body and any headers, changes nothing of another cluster's state.

The log-level attacks run on a real nats-server with the rendered per-cluster users (the attacker
logs in as cluster ``b``, the victim is ``a``); each ends with a fresh subscriber-side follower
whose folded state must equal the state without the attack. The member-level attacks run real
publishers and subscribers on real apiservers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from engine import jetstream
from engine.core import events as ev
from engine.core import fold, subjects
from engine.core.errors import DecodeError
from engine.core.fold import Envelope
from tests.integration.conftest import eventually, export_event
from tests.integration.test_nats_permissions import PASSWORDS, HubServer, hub_config

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
async def hub() -> AsyncIterator[HubServer]:
    server = HubServer(name="mcsync-hostile", hub=hub_config())
    async with server:
        yield server


async def login(hub: HubServer, user: str) -> NATS:
    return await jetstream.connect(hub.url, name=f"t-{user}", user=user, password=PASSWORDS[user])


class Set:
    """One clusterset on the hub: the victim ``a``, the attacker ``b``, and the admin."""

    def __init__(self, a: jetstream.EventLog, b: jetstream.EventLog) -> None:
        self.a = a
        self.b = b
        self.name = a.clusterset


@pytest.fixture
async def cs(hub: HubServer) -> AsyncIterator[Set]:
    # The rendered users name clusterset "perms": the tests share its stream and keep apart by
    # using fresh service names.
    admin = await login(hub, "admin")
    na, nb = await login(hub, "a"), await login(hub, "b")
    try:
        await jetstream.EventLog(admin, "perms").ensure()
        yield Set(
            jetstream.EventLog(na, "perms", timeout=2.0, retry_for=5.0),
            jetstream.EventLog(nb, "perms", timeout=2.0, retry_for=5.0),
        )
    finally:
        for nc in (admin, na, nb):
            await nc.close()


def fresh() -> str:
    return f"s{uuid.uuid4().hex[:8]}"


def headers_of(event: ev.Event, subject: str, clusterset: str) -> dict[str, str]:
    return jetstream.headers_for(event, subject, "0" * 32, T0, clusterset)


async def raw(log: jetstream.EventLog, subject: str, body: bytes, headers: dict[str, str]) -> int:
    """Publish exactly these bytes and headers, as a broken publisher would."""
    ack = await log.js.publish(subject, body, headers=headers, timeout=2.0)
    return int(ack.seq)


async def bootstrap(log: jetstream.EventLog, only: str | None = None) -> fold.ClusterSetState:
    """A fresh follower's folded state once caught up (a subscriber restart)."""
    state = fold.ClusterSetState()
    f = jetstream.Follower(
        log,
        "b",
        folder(state),
        filter_subjects=[only] if only else None,
    )
    await f.start()
    try:
        async with asyncio.timeout(20):
            await f.caught_up.wait()
    finally:
        await f.stop()
    return state


def folder(state: fold.ClusterSetState) -> Callable[[Envelope], None]:
    """An ``on_event`` that folds into ``state``."""

    def on_event(env: Envelope) -> None:
        fold.apply(state, env)

    return on_event


def bad_messages(
    cs: Set, subject: str, cluster: str, name: str
) -> list[tuple[str, bytes, dict[str, str]]]:
    """Every kind of unusable last message, for a subject of ``cluster``'s export ``name``."""
    good = export_event(cluster, name)
    h = headers_of(good, subject, cs.name)
    foreign = export_event("c", name)  # speaks for another cluster
    other_key = export_event(cluster, name + "x")  # describes another key
    body = msgspec.json.decode(ev.encode(good))
    v2 = dict(body, type="export.upserted.v2", weight=3)
    wrong_types = dict(body, ports="eighty")
    return [
        ("garbage", b"\x00\xffnot json", h),
        ("no headers", ev.encode(good), {}),
        ("unknown version", msgspec.json.encode(v2), dict(h, **{"ce-type": "io.mcsync.v2"})),
        ("wrong field types", msgspec.json.encode(wrong_types), h),
        ("foreign cluster", ev.encode(foreign), headers_of(foreign, subject, cs.name)),
        ("another key", ev.encode(other_key), headers_of(other_key, subject, cs.name)),
    ]


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "no headers",
        "unknown version",
        "wrong field types",
        "foreign cluster",
        "another key",
    ],
)
async def test_a_bad_last_message_never_hides_the_usable_event_before_it(
    cs: Set, kind: str
) -> None:
    name = fresh()
    subject = subjects.export(cs.name, "a", "ns", name)
    await cs.a.append(jetstream.Append(subject, export_event("a", name), 0))
    live = await bootstrap(cs.b, subject)
    body, headers = next((b, h) for k, b, h in bad_messages(cs, subject, "a", name) if k == kind)
    await raw(cs.a, subject, body, headers)  # a broken publisher of cluster a

    restarted = await bootstrap(cs.b, subject)

    assert restarted.exports == live.exports
    assert restarted.exports[("ns", name)]["a"] == export_event("a", name)


async def test_a_newer_version_keeps_the_key_and_is_reported_as_skew(cs: Set) -> None:
    name = fresh()
    subject = subjects.export(cs.name, "a", "ns", name)
    await cs.a.append(jetstream.Append(subject, export_event("a", name), 0))
    # A newer publisher: the same state in a version this reader does not know.
    newer = dict(msgspec.json.decode(ev.encode(export_event("a", name))))
    newer.update(type="export.upserted.v2", trafficWeight=5)
    h = headers_of(export_event("a", name), subject, cs.name)
    h["ce-type"] = "io.mcsync.export.upserted.v2"
    await raw(cs.a, subject, msgspec.json.encode(newer), h)

    kinds: list[str] = []
    state = fold.ClusterSetState()
    f = jetstream.Follower(
        cs.b,
        "b",
        folder(state),
        on_bad=lambda s, q, e: kinds.append(e.kind),
        filter_subjects=[subject],
    )
    await f.start()
    await asyncio.wait_for(f.caught_up.wait(), 20)
    await f.stop()

    assert kinds == ["unknown-version"]
    assert state.exports[("ns", name)]["a"] == export_event("a", name)
    assert f.recovered == 1


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(["good", "bad", "refused", "withdraw"])),
        min_size=1,
        max_size=12,
    )
)
async def test_with_bad_messages_anywhere_a_restart_folds_what_a_live_reader_folded(
    cs: Set, steps: list[tuple[int, str]]
) -> None:
    names = [fresh() for _ in range(3)]
    scope = [subjects.export(cs.name, "a", "ns", n) for n in names]
    live_state = fold.ClusterSetState()
    live = jetstream.Follower(cs.b, "b", folder(live_state), filter_subjects=scope)
    await live.start()
    try:
        port = 1
        for i, what in steps:
            subject, name = scope[i], names[i]
            last = await cs.a.last_sequence(subject)
            if what == "good":
                port += 1
                await cs.a.append(jetstream.Append(subject, export_event("a", name, port), last))
            elif what == "withdraw":
                gone = ev.ExportWithdrawn(cluster="a", namespace="ns", name=name)
                await cs.a.append(jetstream.Append(subject, gone, last))
            elif what == "bad":
                await raw(cs.a, subject, b"{not an event", headers_of(export_event("a"), "", "x"))
            else:
                forged = export_event("c", name)
                await raw(cs.a, subject, ev.encode(forged), headers_of(forged, subject, cs.name))
        end = await cs.a.last_sequence(f"mcsync.{cs.name}.>")
        await eventually(lambda: asyncio.sleep(0, live.processed_seq >= end), timeout=10)
    finally:
        await live.stop()

    restarted = fold.ClusterSetState()
    for s in scope:
        part = await bootstrap(cs.b, s)
        restarted.exports.update(part.exports)
    assert restarted.exports == live_state.exports


async def test_another_cluster_cannot_suppress_an_append_through_the_duplicate_window(
    cs: Set,
) -> None:
    name = fresh()
    victim = subjects.export(cs.name, "a", "ns", name)
    seq = await cs.a.append(jetstream.Append(victim, export_event("a", name), 0))
    withdrawal = ev.ExportWithdrawn(cluster="a", namespace="ns", name=name)
    # The id a's withdrawal will carry is predictable: b sends it first, on b's own subject.
    predicted = ev.event_id(victim, seq, ev.encode(withdrawal))
    decoy = export_event("b", name)
    decoy_subject = subjects.export(cs.name, "b", "ns", name)
    h = headers_of(decoy, decoy_subject, cs.name)
    h.update({"Nats-Msg-Id": predicted, "ce-id": predicted})
    await raw(cs.b, decoy_subject, ev.encode(decoy), h)

    landed = await cs.a.append(jetstream.Append(victim, withdrawal, seq))

    got = await cs.a.read_last(victim)
    assert got is not None and got.seq == landed and got.event == withdrawal
    assert cs.a.suppressed == 0
    state = await bootstrap(cs.b, f"mcsync.{cs.name}.*.export.ns.{name}")
    assert "a" not in state.exports.get(("ns", name), {})


async def test_a_heartbeat_speaking_for_another_cluster_is_refused(cs: Set) -> None:
    forged = ev.Heartbeat(
        cluster="a", health="Healthy", reason="r", message="m", instance="impostor"
    )
    subject = subjects.heartbeat(cs.name, "b")
    await raw(cs.b, subject, ev.encode(forged), headers_of(forged, subject, cs.name))
    got: list[DecodeError] = []
    f = jetstream.Follower(
        cs.a, "a", lambda env: None, on_bad=lambda s, q, e: got.append(e), filter_subjects=[subject]
    )
    await f.start()
    await asyncio.wait_for(f.caught_up.wait(), 20)
    await f.stop()
    assert [e.kind for e in got] == ["refused"]
    with pytest.raises(DecodeError, match="speaks for cluster 'a'"):
        await cs.a.read_last(subject)


async def test_every_garbage_kind_on_every_subject_kind_is_refused_not_folded(cs: Set) -> None:
    name = fresh()
    subs = {
        "export": subjects.export(cs.name, "b", "ns", name),
        "slice": subjects.endpoint_slice(cs.name, "b", "ns", name, name + "-1"),
        "cluster": subjects.cluster(cs.name, "b"),
        "sync": subjects.sync(cs.name, "b"),
        "heartbeat": subjects.heartbeat(cs.name, "b"),
        "lease": subjects.lease(cs.name, "b", name),
    }
    sent = 0
    for subject in subs.values():
        for _, body, headers in bad_messages(cs, subject, "b", name):
            await raw(cs.b, subject, body, headers)
            sent += 1
    applied: list[Envelope] = []
    bad: list[DecodeError] = []
    f = jetstream.Follower(
        cs.a,
        "a",
        applied.append,
        on_bad=lambda s, q, e: bad.append(e),
        filter_subjects=list(subs.values()),
        start_seq=1,
    )
    await f.start()
    await asyncio.wait_for(f.caught_up.wait(), 20)
    await f.stop()
    mine = [e for e in applied if e.subject in subs.values()]
    assert mine == []
    assert len(bad) >= sent
