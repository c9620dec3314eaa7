"""Acked appends to the log, and reading it back.

:class:`EventLog` appends with a deterministic event id (``ce-id``), CloudEvents headers and
``Nats-Expected-Last-Subject-Sequence`` (a stale writer gets a
:class:`~engine.core.errors.ConflictError`); bulk appends go through a pipeline where every ack is
awaited with a deadline (nats-py's ``publish_async`` never resolves a future on a server error).
It reads the last event of a subject and replays a range of the log for audit.

Core ``nc.publish`` is never used to write the log: it drops messages under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, NamedTuple

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from engine.core import events as ev
from engine.core import subjects
from engine.core.errors import ConfigError, ConflictError, DecodeError, TransientError
from engine.core.fold import Envelope
from engine.jetstream import connection, delivery, streams, wire
from engine.jetstream.layout import Route
from engine.jetstream.pipeline import NoAck, Pipeline
from engine.observe import logs

log = logs.get("mcsync.eventlog")
WRONG_LAST_SEQUENCE: Final = 10071
# The same refusal without the actual sequence in its text (seen on clustered streams).
WRONG_LAST_SEQUENCE_CONSTANT: Final = 10164
_ACTUAL = re.compile(r"wrong last sequence: (\d+)")


@dataclass(frozen=True, slots=True)
class Append:
    """One append request: the event, its subject and the last sequence it must follow.

    ``expected_last_seq`` None appends unconditionally (heartbeats); 0 means the subject must be
    empty.
    """

    subject: str
    event: ev.Event
    expected_last_seq: int | None = None
    ttl_seconds: int | None = None
    expected_subject: str | None = None
    """Check ``expected_last_seq`` against the last message of this (wildcard) subject
    instead of ``subject`` (nats-server 2.11+); leases use it."""


class EventLog:
    """Appends to and reads from one clusterset's log, along the paths of its :class:`Route`.

    ``stream`` is the stream this side reads (the log, or the cluster's mirror of it). With a
    mirror, a read that must see this process's own appends first waits until the mirror holds
    the log's sequence of the newest of them (a mirror keeps the log's sequences), so that a
    conflict is never resolved from a copy older than the write that caused it.
    """

    def __init__(
        self,
        nc: NATS,
        clusterset: str,
        timeout: float = 5.0,
        retry_for: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        route: Route | None = None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream(publish_async_max_pending=4000)
        self.clusterset = clusterset
        self.route = route or Route(clusterset)
        if self.route.clusterset != clusterset:
            raise ValueError("the route belongs to another clusterset")
        self.stream = self.route.read_stream
        self._seen = 0
        """The newest log sequence this process knows of (its acks, conflicts it was told of)."""
        self.timeout = timeout
        self.retry_for = retry_for
        self.clock = clock
        self._fixed: dict[tuple[str, type[ev.Event]], str] = {}
        self._pipeline = Pipeline(nc, max_in_flight=4000)
        self.suppressed = 0
        """Appends the server acked as duplicates of messages that were not theirs."""

    async def ensure(self, settings: streams.StreamSettings | None = None) -> None:
        """Provision what this side reads and writes, where its credentials allow it.

        ``hub``: the log and its dead-letter stream. ``mirror``: this cluster's mirror in its own
        account (the log is the administrator's). ``leaf``: nothing; the leaf's administrator
        provisions the outbox and the mirror (``mcsync stream ensure --leaf``), so this only checks
        that they exist.
        """
        settings = settings or streams.StreamSettings()
        if self.route.layout == "hub":
            await streams.ensure_stream(self.js, self.clusterset, settings)
        elif self.route.layout == "mirror":
            await streams.ensure_mirror(self.js, self.route, settings)
        await self.require_stream()

    async def prepare(
        self, settings: streams.StreamSettings | None = None, create_log: bool = False
    ) -> None:
        """Make sure what this side reads and writes exists, at the start of a process.

        The log is provisioned only with ``create_log`` (stream-admin rights, hub layout);
        otherwise it must exist. A cluster's own mirror (mirror layout) is always provisioned:
        it is that cluster's copy, in its own account, and its user may create exactly it.
        """
        if create_log or self.route.layout == "mirror":
            await self.ensure(settings)
        else:
            await self.require_stream()

    async def require_stream(self) -> None:
        """Fail with a clear message when a stream this side uses was not provisioned."""
        names = [self.stream]
        if self.route.outbox and self.route.cluster is not None:
            names.append(
                self.route.write_stream(subjects.cluster(self.clusterset, self.route.cluster))
            )
        for name in names:
            try:
                await self.js.stream_info(name)
            except nats.js.errors.NotFoundError as exc:
                raise ConfigError(
                    f"stream {name} does not exist; provision it (`mcsync stream ensure` with "
                    "the administrator's credentials; see docs/deploy.md for the "
                    f"{self.route.layout} layout) or check the clusterset name"
                ) from exc

    def _identify(self, a: Append, now: datetime) -> tuple[bytes, str]:
        """The body and the deterministic event id of an append."""
        body = ev.encode(a.event)
        if a.expected_last_seq is None:
            # Unconditional appends (heartbeats) are new events each time: the id folds the
            # clock in.
            return body, ev.event_id(a.subject, -1, body + now.isoformat().encode())
        return body, ev.event_id(a.subject, a.expected_last_seq, body)

    def _prepare(self, a: Append, now: datetime | None = None) -> tuple[bytes, dict[str, str]]:
        now = now or self.clock()
        body, msg_id = self._identify(a, now)
        headers = wire.headers_for(a.event, a.subject, msg_id, now, self.clusterset)
        if a.expected_last_seq is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(a.expected_last_seq)
            if a.expected_subject is not None:
                headers["Nats-Expected-Last-Subject-Sequence-Subject"] = a.expected_subject
        if a.ttl_seconds is not None:
            headers["Nats-TTL"] = str(a.ttl_seconds)
        return body, headers

    def _frame(self, a: Append, now: datetime, time_text: str) -> tuple[str, bytes, bytes]:
        """``(subject, header block, body)``: the same headers as :meth:`_prepare`, encoded
        straight to the NATS header block without a dictionary (the bulk path)."""
        body, msg_id = self._identify(a, now)
        event_type = type(a.event)
        fixed = self._fixed.get((a.event.cluster, event_type))
        if fixed is None:
            source = wire.ce_encode(f"/mcsync/{self.clusterset}/{a.event.cluster}")
            fixed = (
                f"ce-source: {source}\r\nce-type: {wire.CE_TYPE_PREFIX}{ev.tag_of(event_type)}\r\n"
            )
            self._fixed[(a.event.cluster, event_type)] = fixed
        extra = ""
        if a.expected_last_seq is not None:
            extra = f"Nats-Expected-Last-Subject-Sequence: {a.expected_last_seq}\r\n"
            if a.expected_subject is not None:
                extra += f"Nats-Expected-Last-Subject-Sequence-Subject: {a.expected_subject}\r\n"
        if a.ttl_seconds is not None:
            extra += f"Nats-TTL: {a.ttl_seconds}\r\n"
        block = (
            f"NATS/1.0\r\nce-specversion: {wire.CE_SPECVERSION}\r\n"
            f"ce-id: {msg_id}\r\n{fixed}ce-time: {time_text}\r\n"
            f"ce-datacontenttype: application/json\r\n{extra}\r\n"
        )
        return self.route.write_subject(a.subject), block.encode(), body

    async def append(self, a: Append) -> int:
        """Append one event; return its stream sequence (the same on a deduplicated retry)."""
        body, headers = self._prepare(a)
        return await self._retry_one(a, body, headers)

    async def _publish(self, a: Append, body: bytes, headers: dict[str, str]) -> int:
        to_log = self.route.write_stream(a.subject) == self.route.log_stream
        try:
            ack = await self.js.publish(
                self.route.write_subject(a.subject),
                body,
                timeout=self.timeout,
                stream=self.route.write_stream(a.subject),
                headers=headers,
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in (WRONG_LAST_SEQUENCE, WRONG_LAST_SEQUENCE_CONSTANT):
                m = _ACTUAL.search(exc.description or "")
                actual = int(m.group(1)) if m else None
                if to_log and actual is not None:
                    self._seen = max(self._seen, actual)
                # An append that landed although its ack was lost comes back as a conflict when
                # retried. It is ours if the subject's last message carries our event id.
                landed = await self._landed(a.subject, headers["ce-id"])
                if landed is not None:
                    return landed
                raise ConflictError(a.subject, a.expected_last_seq or 0, actual) from exc
            if connection.is_transient(exc):
                raise TransientError(f"append to {a.subject} failed: {exc!r}") from exc
            raise
        except Exception as exc:
            if connection.is_transient(exc):
                raise TransientError(f"append to {a.subject} failed: {exc!r}") from exc
            raise
        if ack.duplicate:
            # mcsync sends no Nats-Msg-Id, so the server has nothing to deduplicate against:
            # a duplicate ack means someone else's message claimed our id. Never accept it.
            landed = await self._landed(a.subject, headers["ce-id"])
            if landed is not None:
                return landed
            self.suppressed += 1
            log.error(
                "append.suppressed",
                subject=a.subject,
                duplicate_of=ack.seq,
                hint="the server acked this append as a duplicate of a message that is not it",
            )
            raise TransientError(f"append to {a.subject} was acked as a duplicate; sent again")
        if to_log:
            self._seen = max(self._seen, int(ack.seq))
        return int(ack.seq)

    async def _head(self, subject: str) -> api.RawStreamMsg | None:
        """The last message on the log subject ``subject`` where this side writes it.

        That is the outbox for a leaf's own subjects, else the stream this side reads (a mirror
        is first brought up to the newest sequence this process knows of). None when there is
        none. A direct get: cluster users may not use the stream's message-get API.
        """
        stream = self.route.write_stream(subject)
        if stream == self.route.log_stream:
            stream = self.stream
            await self.caught_up(self._seen)
        try:
            return await self.js.get_last_msg(
                stream, self.route.write_subject(subject), direct=True
            )
        except nats.js.errors.NotFoundError:
            return None
        except Exception as exc:
            if connection.is_transient(exc):
                raise TransientError(f"reading the last message of {subject} failed") from exc
            raise

    async def caught_up(self, seq: int, within: float | None = None) -> None:
        """Wait until the stream this side reads holds the log's sequence ``seq``.

        Immediate when it reads the log itself. A mirror that stays behind for ``within``
        seconds (default: the append timeout) raises :class:`TransientError`: its copy of the log
        is not moving (the hub or the way to it is away).
        """
        if self.stream == self.route.log_stream or seq <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if within is None else within)
        delay = 0.005
        while True:
            try:
                info = await self.js.stream_info(self.stream)
            except Exception as exc:
                if connection.is_transient(exc):
                    raise TransientError(f"reading {self.stream} failed: {exc!r}") from exc
                raise
            if int(info.state.last_seq) >= seq:
                return
            if loop.time() >= deadline:
                raise TransientError(
                    f"{self.stream} holds the log up to {info.state.last_seq}, not yet {seq}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def _landed(self, subject: str, msg_id: str) -> int | None:
        """The sequence of the last message on ``subject`` if it is the append ``msg_id``."""
        # On a replicated stream a lagging replica could miss our append; that reports a
        # conflict, which the caller resolves by reading again, never a lost or doubled event.
        last = await self._head(subject)
        if last is not None and last.headers and last.headers.get("ce-id") == msg_id:
            return int(last.seq or 0)
        return None

    async def append_many(self, items: Sequence[Append], ack_timeout: float = 10.0) -> list[int]:
        """Append many events fast; every ack is awaited with a timeout.

        The appends go out pipelined (:class:`~engine.pipeline.Pipeline`, at most 4000 awaiting
        their ack) under one deadline for the whole batch. What got no ack at all (a dropped
        connection, the deadline) is sent once more in bulk when the connection is up. An
        append still refused or unacked then goes through the single-append path, which either
        gets the sequence (an earlier success that landed included) or raises the clear error
        (e.g. :class:`ConflictError`). Nothing is dropped silently.
        """
        if not items:
            return []
        now = self.clock()
        time_text = wire.ce_time(now)
        frames = [self._frame(a, now, time_text) for a in items]
        outcomes = await self._pipeline.publish(frames, ack_timeout + len(items) / 1000)
        unacked = [i for i, o in enumerate(outcomes) if isinstance(o, NoAck)]
        if unacked and await self._connected(ack_timeout):
            # No ack at all (the connection dropped, or the deadline passed): send those again
            # in bulk. What had landed comes back refused and is recognised one by one below.
            again = await self._pipeline.publish(
                [frames[i] for i in unacked], ack_timeout + len(unacked) / 1000
            )
            for i, outcome in zip(unacked, again, strict=True):
                outcomes[i] = outcome
        seqs: list[int] = []
        for a, outcome in zip(items, outcomes, strict=True):
            if type(outcome) is int:
                seqs.append(outcome)
                if self.route.write_stream(a.subject) == self.route.log_stream:
                    self._seen = max(self._seen, outcome)
                continue
            body, headers = self._prepare(a, now)
            seqs.append(await self._retry_one(a, body, headers))
        return seqs

    async def _connected(self, within: float) -> bool:
        """Whether the connection is up, waiting at most ``within`` seconds for a reconnect."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self.nc.is_connected:
            if self.nc.is_closed or loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _retry_one(self, a: Append, body: bytes, headers: dict[str, str]) -> int:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_delay(self.retry_for),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.1),
            reraise=True,
        ):
            with attempt:
                return await self._publish(a, body, headers)
        raise AssertionError("unreachable")  # pragma: no cover

    async def last_sequence(self, subject: str) -> int:
        """The sequence of the last message on ``subject`` (0 when there is none)."""
        msg = await self._head(subject)
        return 0 if msg is None else int(msg.seq or 0)

    async def read_last(self, subject: str) -> Envelope | None:
        """The last message on ``subject`` (wildcards allowed), decoded; None if there is none.

        Raises :class:`DecodeError` when that message is not a valid event.
        """
        msg = await self._head(subject)
        if msg is None:
            return None
        return wire.decode_message(
            self.route.log_subject(msg.subject or subject),
            int(msg.seq or 0),
            msg.time or datetime.now(UTC),
            msg.headers,
            msg.data or b"",
        )

    async def read_last_per_subject(self, filter_subject: str) -> dict[str, Envelope | DecodeError]:
        """The last message of every subject under ``filter_subject``, decoded."""
        out: dict[str, Envelope | DecodeError] = {}
        stream = self.route.write_stream(filter_subject)
        if stream == self.route.log_stream:
            await self.caught_up(self._seen)
            stream = self.stream
        async for item in self._range(
            stream,
            [self.route.write_subject(filter_subject)],
            deliver=api.DeliverPolicy.LAST_PER_SUBJECT,
        ):
            out[item.subject] = item.result
        return out

    async def replay(
        self,
        filter_subjects: Sequence[str] | None = None,
        start_seq: int | None = None,
        start_time: datetime | None = None,
        end_seq: int | None = None,
        end_time: datetime | None = None,
        deliver: api.DeliverPolicy | None = None,
    ) -> AsyncIterator[Replayed]:
        """Read a range of the log in order, then stop (it does not wait for new events)."""
        async for item in self._range(
            self.stream,
            list(filter_subjects or [subjects.all_subjects(self.clusterset)]),
            start_seq,
            start_time,
            end_seq,
            end_time,
            deliver,
        ):
            yield item

    async def _range(
        self,
        stream: str,
        filter_subjects: list[str],
        start_seq: int | None = None,
        start_time: datetime | None = None,
        end_seq: int | None = None,
        end_time: datetime | None = None,
        deliver: api.DeliverPolicy | None = None,
    ) -> AsyncIterator[Replayed]:
        info = await self.js.stream_info(stream)
        last = int(info.state.last_seq)
        if info.state.messages == 0:
            return
        stop_at = min(end_seq, last) if end_seq is not None else last
        cfg = api.ConsumerConfig(
            filter_subjects=filter_subjects,
            ack_policy=api.AckPolicy.NONE,
            mem_storage=True,
            inactive_threshold=30,
        )
        if deliver is not None:
            cfg.deliver_policy = deliver
        elif start_seq is not None:
            cfg.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            cfg.opt_start_seq = start_seq
        elif start_time is not None:
            cfg.deliver_policy = api.DeliverPolicy.BY_START_TIME
            cfg.opt_start_time = start_time.astimezone(UTC)
        else:
            cfg.deliver_policy = api.DeliverPolicy.ALL
        sub = await self.js.subscribe(
            "", stream=stream, config=cfg, ordered_consumer=True, idle_heartbeat=2.0
        )
        try:
            info_c = await sub.consumer_info()
            delivered = int(info_c.delivered.consumer_seq or 0) if info_c.delivered else 0
            if info_c.num_pending == 0 and delivered == 0:
                return  # nothing in range (pushed messages would count as delivered)
            while True:
                msg = await sub.next_msg(timeout=self.timeout * 2)
                item, pending, stored = _decode(msg, self.route.log_subject(msg.subject))
                seq = item.seq
                if seq > stop_at or (end_time is not None and stored > end_time):
                    return
                yield item
                if pending == 0 or seq >= stop_at:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class Replayed(NamedTuple):
    """A message read back: the envelope, or why it did not decode."""

    subject: str
    seq: int
    result: Envelope | DecodeError
    msg: Msg


def position(msg: Msg) -> tuple[int, datetime, int]:
    """(stream sequence, storage time, pending) from a JetStream message's reply subject.

    The same as ``msg.metadata`` without building its objects: this runs once per event read.
    """
    try:
        seq, _, ns, pending, _ = delivery.ack_fields((msg.reply or "").encode())
    except ValueError:
        md = msg.metadata  # raises NotJSMessageError with nats-py's own message
        return md.sequence.stream, md.timestamp, md.num_pending
    return seq, from_ns(ns), pending


def from_ns(ns: int) -> datetime:
    """A storage time in nanoseconds since the epoch as an aware datetime (to the microsecond)."""
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _decode(msg: Msg, subject: str | None = None) -> tuple[Replayed, int, datetime]:
    """The decoded message (read as if on the log ``subject``), the count still pending, and
    its storage time."""
    seq, time, pending = position(msg)
    subject = subject or msg.subject
    try:
        env: Envelope | DecodeError = wire.decode_message(subject, seq, time, msg.headers, msg.data)
    except DecodeError as exc:
        env = exc
    return Replayed(subject, seq, env, msg), pending, time
