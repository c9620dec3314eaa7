"""The follower's inline delivery on a real nats-server: order, gaps, restarts, flow control."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.msg import Msg
from nats.js import api

from engine import jetstream
from engine.core import subjects
from engine.core.fold import Envelope
from engine.jetstream import delivery
from engine.local.natsserver import NatsServer
from tests.integration.conftest import Restartable
from tests.integration.conftest import export_event as export

pytestmark = pytest.mark.integration


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s"
        await asyncio.sleep(0.02)


async def append(log: jetstream.EventLog, first: int, count: int, cluster: str = "a") -> None:
    """``count`` events on subjects of their own (no expected-sequence bookkeeping needed)."""
    await log.append_many(
        [
            jetstream.Append(
                subjects.export(log.clusterset, cluster, "ns", f"s{i}"), export(cluster, f"s{i}")
            )
            for i in range(first, first + count)
        ]
    )


class Seen:
    """Stream sequences handed to ``on_event``, in the order they came."""

    def __init__(self) -> None:
        self.seqs: list[int] = []

    def __call__(self, env: Envelope) -> None:
        self.seqs.append(env.seq)

    async def reach(self, seq: int, timeout: float = 20) -> None:
        await until(lambda: bool(self.seqs) and self.seqs[-1] >= seq, timeout)


@contextlib.asynccontextmanager
async def following(
    log: jetstream.EventLog, on_event: Callable[[Envelope], None], **kw: Any
) -> AsyncIterator[jetstream.Follower]:
    """A started follower from the log's first event (unless ``kw`` says otherwise)."""
    kw.setdefault("start_seq", 1)
    f = jetstream.Follower(log, "x", on_event, **kw)
    await f.start()
    try:
        yield f
    finally:
        await f.stop()


async def test_stream_messages_skip_nats_py_and_arrive_in_order(log: jetstream.EventLog) -> None:
    await append(log, 0, 300)
    seen = Seen()
    async with following(log, seen) as f:
        await seen.reach(300)
        assert f._sub is not None
        # Nothing went through nats-py's queue and callback task.
        assert f._sub._sub._pending_queue.qsize() == 0
        await append(log, 300, 200)
        await seen.reach(500)
        assert seen.seqs == list(range(1, 501))


async def test_a_gap_in_consumer_sequence_restarts_the_consumer_after_the_last_event_handed_over(
    log: jetstream.EventLog,
) -> None:
    await append(log, 0, 50)
    seen = Seen()
    async with following(log, seen) as f:
        await seen.reach(50)
        assert f._sub is not None
        sub, jsi = f._sub._sub, f._sub._sub._jsi
        assert jsi is not None
        consumer = f._sub._consumer
        # A message whose consumer sequence skips ahead, as when a message was lost on the way.
        reply = f"$JS.ACK.{log.stream}.{consumer}.1.999.{jsi._dseq + 5}.1.0".encode()
        subject = subjects.export(log.clusterset, "a", "ns", "s0").encode()
        await log.nc._process_msg(sub._id, subject, reply, b"{}", None)  # type: ignore[arg-type]  # nats-py's parser passes None for a message without headers
        await until(lambda: f._sub is not None and f._sub._consumer != consumer, 10)
        await append(log, 50, 50)
        await seen.reach(100)
        assert seen.seqs == list(range(1, 101))  # the forged one dropped; nothing lost or repeated
        assert f.dead_letters == 0


async def test_a_follower_resumes_after_a_nats_server_restart_without_loss_or_repeats(
    restartable: Restartable,
) -> None:
    server, log = restartable
    await append(log, 0, 100)
    seen = Seen()
    async with following(log, seen, idle_heartbeat=0.5):
        await seen.reach(100)
        await server.restart()
        await append(log, 100, 100)
        await seen.reach(200, timeout=30)
        assert seen.seqs == list(range(1, 201))


def f_sub_fctask(log: jetstream.EventLog) -> asyncio.Task[None]:
    """nats-py's flow-control poll of the one inline subscription of ``log``'s client."""
    d = delivery._installed(log.nc)
    assert d is not None
    (sub,) = d.handlers
    assert sub._jsi is not None and sub._jsi._fctask is not None
    task: asyncio.Task[None] = sub._jsi._fctask
    return task


async def test_a_backlog_larger_than_the_flow_control_window_is_read_whole(
    log: jetstream.EventLog,
) -> None:
    n = 20_000
    await append(log, 0, n)
    seen = Seen()
    flow_control: list[bytes] = []
    async with following(log, seen):
        d = delivery._installed(log.nc)
        assert d is not None
        original = d.original

        async def counting(
            sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
        ) -> None:
            if headers and b"FlowControl" in headers:
                flow_control.append(reply)
            await original(sid, subject, reply, data, headers)

        d.original = counting
        # Answers are never deferred: nats-py's poll for deferred ones does not run.
        assert f_sub_fctask(log).cancelled() or f_sub_fctask(log).cancelling()
        try:
            await seen.reach(n, timeout=60)
        finally:
            d.original = original
    assert seen.seqs == list(range(1, n + 1))
    assert flow_control, "the server asked for flow control and was answered"


async def test_an_exception_in_on_event_is_reported_and_following_goes_on(
    log: jetstream.EventLog,
) -> None:
    await append(log, 0, 20)
    seen = Seen()

    def on_event(env: Envelope) -> None:
        seen(env)
        if env.seq in (5, 20):  # 20: the last event of the catch-up
            raise RuntimeError("a bug in the consumer")

    async with following(log, on_event) as f:
        await seen.reach(20)
        await asyncio.wait_for(f.caught_up.wait(), 5)
        assert f.processed_seq == 20
        await append(log, 20, 5)
        await seen.reach(25)
        assert seen.seqs == list(range(1, 26))
        assert log.nc.is_connected


async def test_a_message_that_is_not_a_stream_message_is_dropped_and_reading_goes_on(
    log: jetstream.EventLog, nats_server: NatsServer
) -> None:
    await append(log, 0, 5)
    seen = Seen()
    async with following(log, seen) as f:
        await seen.reach(5)
        assert f._sub is not None
        deliver = f._sub._sub._subject
        other = await jetstream.connect(nats_server.url)
        try:  # someone publishes on the delivery subject with a reply of their own
            await other.publish(deliver, b"not an event", reply="not.an.ack")
            await other.publish(deliver, b"not an event either")
            await other.flush()
        finally:
            await other.close()
        await append(log, 5, 5)
        await seen.reach(10)
        assert seen.seqs == list(range(1, 11))
        assert f.dead_letters == 0


async def test_the_ack_subject_with_a_domain_is_read_and_kept_in_the_layout_nats_py_reads(
    log: jetstream.EventLog,
) -> None:
    await append(log, 0, 5)
    seen: list[Envelope] = []
    async with following(log, seen.append) as f:
        await until(lambda: len(seen) >= 5)
        assert f._sub is not None
        sub, jsi = f._sub._sub, f._sub._sub._jsi
        assert jsi is not None
        stored = await log.js.get_msg(log.stream, 5)
        assert stored.headers and stored.data and stored.subject
        lines = "".join(f"{k}: {v}\r\n" for k, v in stored.headers.items())
        block = f"NATS/1.0\r\n{lines}\r\n".encode()
        consumer, dseq, ns = f._sub._consumer, jsi._dseq, 1_767_225_600_123_456_000
        reply = f"$JS.ACK.hub.ACCHASH.{log.stream}.{consumer}.1.6.{dseq}.{ns}.0.tok".encode()
        await log.nc._process_msg(sub._id, stored.subject.encode(), reply, stored.data, block)
        assert [e.seq for e in seen] == [1, 2, 3, 4, 5, 6]
        assert seen[-1].time == datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
        assert jsi._cmeta == f"$JS.ACK.{log.stream}.{consumer}.1.6.{dseq}.{ns}.0"
        # nats-py's heartbeat check reads that layout and finds the consumer in step.
        heartbeat = Msg(log.nc, headers={"Nats-Last-Consumer": str(dseq)})
        assert await jsi.check_for_sequence_mismatch(heartbeat) is None


async def test_followers_share_a_connection_and_the_last_to_stop_restores_the_client(
    log: jetstream.EventLog,
) -> None:
    await append(log, 0, 10, cluster="a")
    await append(log, 0, 10, cluster="b")
    only_a, only_b = Seen(), Seen()
    a, b = (subjects.cluster_subjects(log.clusterset, c) for c in "ab")
    fa = jetstream.Follower(log, "x", only_a, filter_subjects=[a])
    fb = jetstream.Follower(log, "y", only_b, filter_subjects=[b])
    await fa.start()
    await fb.start()
    await asyncio.wait_for(asyncio.gather(fa.caught_up.wait(), fb.caught_up.wait()), 10)
    assert len(only_a.seqs) == len(only_b.seqs) == 10
    await fa.stop()
    await append(log, 10, 1, cluster="b")
    await only_b.reach(21)
    assert "_process_msg" in vars(log.nc)
    await fb.stop()
    assert "_process_msg" not in vars(log.nc)  # nats-py's own method again
    assert len(only_a.seqs) == 10


async def test_messages_queued_by_nats_py_before_inline_delivery_are_handed_over_first(
    log: jetstream.EventLog,
) -> None:
    await append(log, 0, 40)
    order: list[tuple[str, int]] = []

    async def cb(msg: Msg) -> None:
        raise AssertionError("the callback task was stopped")

    cfg = api.ConsumerConfig(
        filter_subjects=[subjects.all_subjects(log.clusterset)],
        deliver_policy=api.DeliverPolicy.ALL,
    )
    psub = await log.js.subscribe(
        "", stream=log.stream, config=cfg, cb=cb, ordered_consumer=True, idle_heartbeat=1.0
    )
    try:
        # Stop nats-py's callback task: what arrives now waits in its queue.
        task = psub._sub._wait_for_msgs_task
        assert task is not None
        task.cancel()
        queue = psub._sub._pending_queue
        await until(lambda: queue.qsize() >= 40, 10)

        def handler(
            subject: str, seq: int, time_ns: int, pending: int, block: bytes | None, data: bytes
        ) -> None:
            assert block is not None and b"ce-type" in block
            order.append(("inline", seq))

        delivery.inline(
            psub, handler, lambda msg: order.append(("queued", msg.metadata.sequence.stream))
        )
        assert queue.qsize() == 0 and psub._sub._pending_size == 0
        await append(log, 40, 10)
        await until(lambda: len(order) >= 50, 10)
        assert [seq for _, seq in order] == list(range(1, 51))
        assert {how for how, seq in order if seq <= 40} == {"queued"}
        assert {how for how, seq in order if seq > 40} == {"inline"}
    finally:
        delivery.remove(psub)
        await psub.unsubscribe()
