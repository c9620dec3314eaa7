"""The JetStream log against a real nats-server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import nats.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import jetstream
from engine.core import events as ev
from engine.core import fold, subjects
from engine.core.errors import ConflictError
from engine.jetstream import pipeline, wire
from engine.local.natsserver import NatsServer
from tests.integration.conftest import Restartable
from tests.integration.conftest import export_event as export

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_append_returns_increasing_sequences(log: jetstream.EventLog) -> None:
    s = subjects.export(log.clusterset, "a", "ns", "web")
    one = await log.append(jetstream.Append(s, export("a"), expected_last_seq=0))
    two = await log.append(jetstream.Append(s, export("a", port=81), expected_last_seq=one))
    assert two > one
    assert await log.last_sequence(s) == two


async def test_a_stale_writer_gets_a_conflict_error_naming_the_actual_sequence(
    log: jetstream.EventLog,
) -> None:
    s = subjects.export(log.clusterset, "a", "ns", "web")
    one = await log.append(jetstream.Append(s, export("a"), expected_last_seq=0))
    await log.append(jetstream.Append(s, export("a", port=81), expected_last_seq=one))
    with pytest.raises(ConflictError) as info:
        await log.append(jetstream.Append(s, export("a", port=82), expected_last_seq=one))
    assert info.value.actual == one + 1
    assert "stale" in str(info.value)


async def test_a_republished_append_is_stored_once_without_any_deduplication_id(
    log: jetstream.EventLog,
) -> None:
    s = subjects.export(log.clusterset, "a", "ns", "web")
    a = jetstream.Append(s, export("a"), expected_last_seq=0)
    first = await log.append(a)
    # A crash after the append but before the writer noted it: the same append again. There is
    # no Nats-Msg-Id to deduplicate by; the compare-and-set refuses the copy and the writer
    # recognises its own event at the head of the subject.
    _, headers = log._prepare(a)
    assert "Nats-Msg-Id" not in headers
    assert await log.append(a) == first
    info = await log.js.stream_info(log.stream, subjects_filter=s)
    assert (info.state.subjects or {}).get(s) == 1


async def test_a_retried_append_whose_ack_was_lost_is_recognised_not_refused(
    log: jetstream.EventLog,
) -> None:
    s = subjects.export(log.clusterset, "a", "ns", "web")
    a = jetstream.Append(s, export("a"), expected_last_seq=0)
    first = await log.append(a)
    # The same append again, as a retry after a lost ack sends it: the expected sequence is
    # stale now, but the message at the head of the subject is this very event.
    assert await log.append(a) == first
    with pytest.raises(ConflictError):  # a different event at the same position is refused
        await log.append(jetstream.Append(s, export("a", port=99), expected_last_seq=0))


async def test_messages_carry_cloudevents_binary_headers(log: jetstream.EventLog) -> None:
    s = subjects.export(log.clusterset, "a", "ns", "web")
    seq = await log.append(jetstream.Append(s, export("a"), expected_last_seq=0))
    msg = await log.js.get_msg(log.stream, seq)
    h = msg.headers or {}
    assert h["ce-specversion"] == "1.0"
    assert h["ce-type"] == "io.mcsync.export.upserted.v1"
    assert "Nats-Msg-Id" not in h  # nothing another cluster could forge to suppress it
    assert len(h["ce-id"]) == 32
    assert h["ce-source"] == f"/mcsync/{log.clusterset}/a"
    assert h["ce-datacontenttype"] == "application/json"
    assert h["ce-time"].endswith("Z")


async def test_bulk_append_stores_every_event_in_order(log: jetstream.EventLog) -> None:
    items = [
        jetstream.Append(
            subjects.export(log.clusterset, "a", "ns", f"s{i}"), export("a", f"s{i}"), 0
        )
        for i in range(500)
    ]
    seqs = await log.append_many(items)
    assert len(set(seqs)) == 500
    info = await log.js.stream_info(log.stream)
    assert info.state.messages == 500


async def test_bulk_append_reports_a_conflict_instead_of_hanging(log: jetstream.EventLog) -> None:
    s = subjects.export(log.clusterset, "a", "ns", "web")
    await log.append(jetstream.Append(s, export("a"), expected_last_seq=0))
    with pytest.raises(ConflictError):
        await log.append_many(
            [jetstream.Append(s, export("a", port=9), expected_last_seq=0)], ack_timeout=1.0
        )


async def test_replay_by_sequence_and_by_subject_filter(log: jetstream.EventLog) -> None:
    sa = subjects.export(log.clusterset, "a", "ns", "web")
    sb = subjects.export(log.clusterset, "b", "ns", "web")
    a1 = await log.append(jetstream.Append(sa, export("a"), 0))
    await log.append(jetstream.Append(sb, export("b"), 0))
    await log.append(jetstream.Append(sa, export("a", port=81), a1))
    got = [r.result async for r in log.replay(filter_subjects=[sa])]
    assert [e.seq for e in got if isinstance(e, fold.Envelope)] == [1, 3]
    from_two = [r.seq async for r in log.replay(start_seq=2)]
    assert from_two == [2, 3]
    to_two = [r.seq async for r in log.replay(end_seq=2)]
    assert to_two == [1, 2]


async def test_last_per_subject_returns_only_the_current_state(log: jetstream.EventLog) -> None:
    sa = subjects.export(log.clusterset, "a", "ns", "web")
    a1 = await log.append(jetstream.Append(sa, export("a"), 0))
    a2 = await log.append(jetstream.Append(sa, export("a", port=81), a1))
    last = await log.read_last_per_subject(subjects.cluster_subjects(log.clusterset, "a"))
    env = last[sa]
    assert isinstance(env, fold.Envelope)
    assert env.seq == a2


async def test_two_writers_and_two_independent_followers_fold_identical_state(
    log: jetstream.EventLog, nats_server: NatsServer
) -> None:
    async def writer(cluster: str) -> None:
        nc = await jetstream.connect(nats_server.url)
        lg = jetstream.EventLog(nc, log.clusterset)
        last: dict[str, int] = {}
        for i in range(60):
            s = subjects.export(log.clusterset, cluster, "ns", f"s{i % 7}")
            last[s] = await lg.append(
                jetstream.Append(s, export(cluster, f"s{i % 7}", port=1000 + i), last.get(s, 0))
            )
        await nc.drain()

    async def follower() -> bytes:
        nc = await jetstream.connect(nats_server.url)
        lg = jetstream.EventLog(nc, log.clusterset)
        state = fold.ClusterSetState()
        all_in = asyncio.Event()

        def on_event(e: fold.Envelope) -> None:
            fold.apply(state, e)
            if state.position >= 120:
                all_in.set()

        f = jetstream.Follower(lg, "x", on_event)
        await f.start()
        await asyncio.wait_for(all_in.wait(), 30)
        await f.stop()
        await nc.drain()
        return state.snapshot()

    followers = [asyncio.create_task(follower()) for _ in range(2)]
    await asyncio.gather(writer("a"), writer("b"))
    one, two = await asyncio.wait_for(asyncio.gather(*followers), 30)
    assert one == two
    # A late follower bootstrapping at LAST_PER_SUBJECT reaches the same state.
    late = fold.ClusterSetState()

    def apply_late(e: fold.Envelope) -> None:
        fold.apply(late, e)

    f = jetstream.Follower(log, "late", apply_late)
    await f.start()
    await asyncio.wait_for(f.caught_up.wait(), 10)
    await f.stop()
    assert msgspec.json.decode(late.snapshot())["exports"] == msgspec.json.decode(one)["exports"]


async def test_a_follower_on_an_empty_log_is_caught_up_at_once(log: jetstream.EventLog) -> None:
    f = jetstream.Follower(log, "x", lambda e: None)
    await f.start()
    await asyncio.wait_for(f.caught_up.wait(), 5)
    await f.stop()


garbage = st.one_of(
    st.binary(max_size=200),
    st.just(b'{"type":"no.such.v1","cluster":"a"}'),
    st.just(b'{"type":"export.withdrawn.v1","cluster":7,"namespace":"ns","name":"x"}'),
    st.just(b"[]"),
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bad=st.lists(garbage, min_size=1, max_size=4), missing_headers=st.booleans())
async def test_garbage_is_dead_lettered_and_valid_traffic_still_folds(
    nats_server: NatsServer, bad: list[bytes], missing_headers: bool
) -> None:
    import uuid

    name = f"g{uuid.uuid4().hex[:10]}"
    nc = await jetstream.connect(nats_server.url)
    lg = jetstream.EventLog(nc, name)
    await lg.ensure()
    sa = subjects.export(name, "a", "ns", "web")
    good1 = await lg.append(jetstream.Append(sa, export("a"), 0))
    for i, data in enumerate(bad):
        headers = (
            None
            if missing_headers
            else {
                "ce-specversion": "1.0",
                "ce-id": f"x{i}",
                "ce-type": "io.mcsync.export.upserted.v1",
                "ce-source": "/x",
            }
        )
        await lg.js.publish(subjects.export(name, "a", "ns", f"bad{i}"), data, headers=headers)
    await lg.append(jetstream.Append(sa, export("a", port=81), good1))
    state = fold.ClusterSetState()
    bad_seen: list[int] = []

    def on_event(e: fold.Envelope) -> None:
        fold.apply(state, e)

    f = jetstream.Follower(lg, "b", on_event, on_bad=lambda s, q, e: bad_seen.append(q))
    await f.start()
    await asyncio.wait_for(f.caught_up.wait(), 10)
    await f.stop()
    assert len(bad_seen) == len(bad)
    assert state.exports[("ns", "web")]["a"].ports[0].port == 81
    dlq = await lg.js.stream_info(jetstream.dead_letter_stream(name))
    assert dlq.state.messages == len(bad)
    await lg.js.delete_stream(jetstream.dead_letter_stream(name))
    await nc.drain()


async def test_bulk_append_keeps_order_beyond_the_in_flight_bound(log: jetstream.EventLog) -> None:
    log._pipeline = pipeline.Pipeline(log.nc, max_in_flight=16)
    items = [
        jetstream.Append(
            subjects.export(log.clusterset, "a", "ns", f"s{i % 50}"),
            export("a", f"s{i % 50}", port=1000 + i),
            None,
        )
        for i in range(400)
    ]
    seqs = await log.append_many(items)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 400
    stored = await log.js.get_msg(log.stream, seqs[123])
    assert stored.subject == items[123].subject
    assert stored.data is not None
    assert ev.decode(stored.data) == items[123].event


async def test_appends_whose_acks_did_not_come_in_time_are_retried_without_duplicates(
    log: jetstream.EventLog,
) -> None:
    items = [
        jetstream.Append(
            subjects.export(log.clusterset, "a", "ns", f"s{i}"), export("a", f"s{i}"), 0
        )
        for i in range(300)
    ]
    now = log.clock()
    frames = [log._frame(a, now, wire.ce_time(now)) for a in items]
    # A deadline that passes while the batch is in flight: some or all acks are given up on.
    outcomes = await log._pipeline.publish(frames, timeout=0.0)
    assert any(isinstance(o, pipeline.NoAck) for o in outcomes)
    await asyncio.sleep(0.5)  # whatever was sent has landed by now
    # The writer does not know what landed, so it appends everything again.
    seqs = await log.append_many(items)
    info = await log.js.stream_info(log.stream)
    assert info.state.messages == 300
    assert sorted(seqs) == list(range(1, 301))


async def test_a_refused_append_in_a_batch_raises_the_clear_error(log: jetstream.EventLog) -> None:
    s = subjects.export(log.clusterset, "a", "ns", "web")
    await log.append(jetstream.Append(s, export("a"), expected_last_seq=0))
    other = subjects.export(log.clusterset, "a", "ns", "api")
    with pytest.raises(ConflictError) as info:
        await log.append_many(
            [
                jetstream.Append(other, export("a", "api"), expected_last_seq=0),
                jetstream.Append(s, export("a", port=9), expected_last_seq=0),  # stale
            ]
        )
    assert info.value.actual == 1
    assert await log.last_sequence(other) == 2  # the valid append in the batch landed


async def test_an_oversized_event_in_a_batch_is_refused_by_the_client_and_the_rest_lands(
    log: jetstream.EventLog,
) -> None:
    huge = ev.ExportUpserted(
        cluster="a",
        namespace="ns",
        name="huge",
        uid="u",
        created=T0,
        exported_annotations={"blob": "x" * (log.nc.max_payload + 10)},
    )
    small = jetstream.Append(subjects.export(log.clusterset, "a", "ns", "ok"), export("a", "ok"), 0)
    with pytest.raises(nats.errors.MaxPayloadError):
        await log.append_many(
            [small, jetstream.Append(subjects.export(log.clusterset, "a", "ns", "huge"), huge, 0)]
        )
    assert log.nc.is_connected  # the server never saw it, so it did not close the connection
    assert await log.last_sequence(small.subject) == 1


async def test_a_bulk_append_across_a_server_restart_lands_every_event_once(
    restartable: Restartable,
) -> None:
    server, log = restartable
    n = 20_000
    items = [
        jetstream.Append(
            subjects.export(log.clusterset, "a", "ns", f"s{i}"), export("a", f"s{i}"), 0
        )
        for i in range(n)
    ]
    bulk = asyncio.create_task(log.append_many(items, ack_timeout=5.0))
    await asyncio.sleep(0.1)  # part of the batch is out, part is acked
    assert not bulk.done()
    await server.restart()
    seqs = await asyncio.wait_for(bulk, 120)
    info = await log.js.stream_info(log.stream)
    assert info.state.messages == n  # nothing lost, nothing twice
    assert sorted(seqs) == list(range(1, n + 1))
    for i in (0, n // 2, n - 1):
        stored = await log.js.get_msg(log.stream, seqs[i])
        assert stored.subject == items[i].subject
