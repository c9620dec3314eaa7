"""The JetStream log: the one port through which events are written and read.

* :func:`connect` - a connection that reconnects forever with backoff (nats-py's default gives up
  after 60 tries and closes the connection for good);
* :func:`ensure_stream` - the clusterset's stream (file storage, deny delete and purge, direct
  get, per-message TTL, a duplicate window) and its dead-letter stream;
* :class:`EventLog` - acked appends with a deterministic ``Nats-Msg-Id``, CloudEvents
  binary-mode headers and ``Nats-Expected-Last-Subject-Sequence`` (a stale writer gets a
  :class:`~engine.errors.ConflictError`); bulk appends with bounded concurrency where every ack
  is awaited with a timeout (nats-py's ``publish_async`` never resolves a future on a server
  error); reading the last event per subject; following; replaying a range;
* :func:`decode_message` - the strict reader of one message: anything that is not a valid
  mcsync event raises :class:`~engine.errors.DecodeError` and goes to the dead-letter stream.

Core ``nc.publish`` is never used to write the log: it drops messages under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple
from urllib.parse import quote, unquote

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from engine import delivery, logs, subjects
from engine import events as ev
from engine.errors import ConfigError, ConflictError, DecodeError, TransientError
from engine.fold import Envelope
from engine.pipeline import NoAck, Pipeline

log = logs.get("mcsync.eventlog")

CE_SPECVERSION: Final = "1.0"
CE_TYPE_PREFIX: Final = "io.mcsync."
WRONG_LAST_SEQUENCE: Final = 10071
NO_SUITABLE_PEERS: Final = 10005
# The same refusal without the actual sequence in its text (seen on clustered streams).
WRONG_LAST_SEQUENCE_CONSTANT: Final = 10164
_ACTUAL = re.compile(r"wrong last sequence: (\d+)")


# --- connection and stream -----------------------------------------------------------------


async def connect(
    servers: str | Sequence[str],
    name: str = "mcsync",
    credentials: str | None = None,
    user: str | None = None,
    password: str | None = None,
    on_state: Callable[[str], None] | None = None,
) -> NATS:
    """Connect with reconnects that never give up."""

    async def error_cb(exc: Exception) -> None:
        log.warning("nats.error", error=repr(exc))

    async def disconnected_cb() -> None:
        log.info("nats.disconnected")
        if on_state:
            on_state("disconnected")

    async def reconnected_cb() -> None:
        log.info("nats.reconnected")
        if on_state:
            on_state("connected")

    kwargs: dict[str, Any] = {}
    if credentials:
        kwargs["user_credentials"] = credentials
    if user:
        kwargs["user"] = user
        kwargs["password"] = password
    return await nats.connect(
        servers=[servers] if isinstance(servers, str) else list(servers),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        pending_size=64 * 1024 * 1024,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        **kwargs,
    )


async def close(nc: NATS, timeout: float = 5.0) -> None:
    """Close a connection without ever hanging a shutdown (a dead server, pending requests)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await nc.close()


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How the clusterset's stream is provisioned."""

    replicas: int = 1
    """JetStream replicas (1, or 3/5 on a clustered server)."""
    max_age_seconds: float = 0
    """Drop events older than this (0 keeps history forever)."""
    duplicate_window_seconds: float = 120
    """How long JetStream remembers ``Nats-Msg-Id``s to drop re-published events."""
    max_msg_size: int = ev.MAX_EVENT_BYTES


def dead_letter_subject(clusterset: str, cluster: str) -> str:
    return f"mcsyncdlq.{clusterset}.{cluster}"


def dead_letter_stream(clusterset: str) -> str:
    return "MCSYNCDLQ_" + subjects.stream_name(clusterset).removeprefix("MCSYNC_")


async def ensure_stream(js: JetStreamContext, clusterset: str, settings: StreamSettings) -> None:
    """Create the clusterset's stream (and its dead-letter stream) or bring their config up."""
    main = api.StreamConfig(
        name=subjects.stream_name(clusterset),
        description=f"mcsync event log of clusterset {clusterset}",
        subjects=[subjects.all_subjects(clusterset)],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=settings.max_age_seconds,
        duplicate_window=settings.duplicate_window_seconds,
        max_msg_size=settings.max_msg_size,
        discard=api.DiscardPolicy.OLD,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_msg_ttl=True,
    )
    dlq = api.StreamConfig(
        name=dead_letter_stream(clusterset),
        description=f"mcsync messages of clusterset {clusterset} that did not decode",
        subjects=[f"mcsyncdlq.{clusterset}.>"],
        storage=api.StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=7 * 24 * 3600,
        max_msgs=100_000,
    )
    try:
        for cfg in (main, dlq):
            await _provision(js, cfg)
    except TransientError as exc:
        raise ConfigError(
            f"could not provision stream {main.name}: {exc}. If NATS permissions forbid this "
            "user to create streams, run `mcsync stream ensure` with the admin user and start "
            "with --no-create-stream."
        ) from exc


async def _provision(js: JetStreamContext, cfg: api.StreamConfig) -> None:
    """Create (or update) one stream; a forming JetStream cluster is waited for."""
    # A JetStream cluster that just started may not have elected its meta leader yet.
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_delay(30),
        wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
        reraise=True,
    ):
        with attempt:
            try:
                await js.add_stream(cfg)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code == NO_SUITABLE_PEERS:  # a forming cluster: not yet
                    raise TransientError(f"provisioning {cfg.name}: {exc}") from exc
                if exc.err_code != 10058:  # name in use with another config: update it
                    raise
                await js.update_stream(cfg)
            except Exception as exc:
                if _transient(exc):
                    raise TransientError(f"provisioning {cfg.name} failed: {exc!r}") from exc
                raise


# --- encoding ------------------------------------------------------------------------------


_CE_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if c not in (0x22, 0x25))
_CE_PLAIN: Final = re.compile(r"[\x21\x23\x24\x26-\x7e]*")


def _ce_encode(value: str) -> str:
    """Percent-encode a CloudEvents header value (NATS binding rules): bytes outside
    0x21-0x7E, ``"`` and ``%`` become upper-case ``%XX`` of their UTF-8 bytes."""
    if _CE_PLAIN.fullmatch(value):
        return value  # the common case: nothing to encode
    return quote(value, safe=_CE_SAFE)


def headers_for(
    event: ev.Event, subject: str, msg_id: str, now: datetime, clusterset: str
) -> dict[str, str]:
    return {
        "Nats-Msg-Id": msg_id,
        "ce-specversion": CE_SPECVERSION,
        "ce-id": msg_id,
        "ce-source": _ce_encode(f"/mcsync/{clusterset}/{event.cluster}"),
        "ce-type": CE_TYPE_PREFIX + ev.tag_of(type(event)),
        "ce-time": _ce_time(now),
        "ce-datacontenttype": "application/json",
    }


def _ce_time(now: datetime) -> str:
    return now.astimezone(UTC).isoformat().replace("+00:00", "Z")


_CE_TYPES: Final = {t: CE_TYPE_PREFIX + ev.tag_of(t) for t in ev.EVENT_TYPES}
_REQUIRED_HEADERS: Final = ("ce-specversion", "ce-id", "ce-type", "ce-source")


def _header(headers: dict[str, str], name: str) -> str | None:
    """A header by lower-case name; names are case-insensitive, ours are sent lower-case."""
    value = headers.get(name)
    if value is None:
        for k, v in headers.items():
            if k.lower() == name:
                return v
    return value


def parse_headers(block: bytes) -> dict[str, str]:
    """The headers of a NATS header block without inline status: a ``NATS/1.0`` line, then
    ``Name: value`` lines.

    Names and values are stripped of ASCII whitespace; a line without a colon, or a name that
    is not ASCII or has whitespace inside, is skipped; bytes that are not UTF-8 become U+FFFD.
    That is what nats-py makes of the same block, in less time (a test compares the two).
    """
    out: dict[str, str] = {}
    lines = block.decode("utf-8", "replace").split("\r\n")
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip(_OWS)
            if name.isascii() and (name.split() == [name] or not name):  # no whitespace at all
                out[name] = value.strip(_OWS)
    return out


_OWS: Final = " \t\n\r\x0b\x0c"  # what bytes.strip() strips


def decode_message(
    subject: str, seq: int, time: datetime, headers: dict[str, str] | None, data: bytes
) -> Envelope:
    """Decode one message of the log strictly; raise :class:`DecodeError` on anything odd."""
    if len(data) > ev.MAX_EVENT_BYTES:
        raise DecodeError(f"message of {len(data)} bytes exceeds {ev.MAX_EVENT_BYTES}")
    if not headers:
        raise DecodeError("message has no CloudEvents headers")
    spec = headers.get("ce-specversion")
    ce_type = headers.get("ce-type")
    if spec is None or ce_type is None or "ce-id" not in headers or "ce-source" not in headers:
        # Not as mcsync sends them: look the names up case-insensitively.
        found = [_header(headers, h) for h in _REQUIRED_HEADERS]
        for name, value in zip(_REQUIRED_HEADERS, found, strict=True):
            if value is None:
                raise DecodeError(f"message lacks the {name} header")
        spec, _, ce_type, _ = found
        assert spec is not None and ce_type is not None
    if spec != CE_SPECVERSION and spec.strip('"') != CE_SPECVERSION:
        raise DecodeError(f"unsupported CloudEvents specversion {spec!r}")
    try:
        event = ev.decode_sized(data)  # the size was checked above
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(f"body is not a valid event: {exc}") from exc
    if '"' in ce_type or "%" in ce_type:
        ce_type = unquote(ce_type.strip('"'), errors="strict")
    if ce_type != _CE_TYPES[type(event)]:
        raise DecodeError(f"ce-type {ce_type!r} does not match the body's type")
    return Envelope(seq, subject, time, event)


# --- the log -------------------------------------------------------------------------------


def _transient(exc: BaseException) -> bool:
    return isinstance(
        exc,
        nats.errors.TimeoutError
        | nats.errors.NoRespondersError
        | nats.js.errors.NoStreamResponseError
        | nats.errors.ConnectionClosedError
        | nats.errors.ConnectionReconnectingError
        | nats.js.errors.ServiceUnavailableError
        | asyncio.TimeoutError,
    )


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
    """Appends to and reads from one clusterset's stream."""

    def __init__(
        self,
        nc: NATS,
        clusterset: str,
        timeout: float = 5.0,
        retry_for: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream(publish_async_max_pending=4000)
        self.clusterset = clusterset
        self.stream = subjects.stream_name(clusterset)
        self.timeout = timeout
        self.retry_for = retry_for
        self.clock = clock
        self._fixed: dict[tuple[str, type[ev.Event]], str] = {}
        self._pipeline = Pipeline(nc, max_in_flight=4000)

    async def ensure(self, settings: StreamSettings | None = None) -> None:
        await ensure_stream(self.js, self.clusterset, settings or StreamSettings())

    async def require_stream(self) -> None:
        """Fail with a clear message when the stream was not provisioned."""
        try:
            await self.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError as exc:
            raise ConfigError(
                f"stream {self.stream} does not exist; provision it (mcsync publisher without "
                "--no-create-stream, run once with admin credentials) or check the clusterset name"
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
        headers = headers_for(a.event, a.subject, msg_id, now, self.clusterset)
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
            source = _ce_encode(f"/mcsync/{self.clusterset}/{a.event.cluster}")
            fixed = f"ce-source: {source}\r\nce-type: {CE_TYPE_PREFIX}{ev.tag_of(event_type)}\r\n"
            self._fixed[(a.event.cluster, event_type)] = fixed
        extra = ""
        if a.expected_last_seq is not None:
            extra = f"Nats-Expected-Last-Subject-Sequence: {a.expected_last_seq}\r\n"
            if a.expected_subject is not None:
                extra += f"Nats-Expected-Last-Subject-Sequence-Subject: {a.expected_subject}\r\n"
        if a.ttl_seconds is not None:
            extra += f"Nats-TTL: {a.ttl_seconds}\r\n"
        block = (
            f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\nce-specversion: {CE_SPECVERSION}\r\n"
            f"ce-id: {msg_id}\r\n{fixed}ce-time: {time_text}\r\n"
            f"ce-datacontenttype: application/json\r\n{extra}\r\n"
        )
        return a.subject, block.encode(), body

    async def append(self, a: Append) -> int:
        """Append one event; return its stream sequence (the same on a deduplicated retry)."""
        body, headers = self._prepare(a)
        return await self._retry_one(a, body, headers)

    async def _publish(self, a: Append, body: bytes, headers: dict[str, str]) -> int:
        try:
            ack = await self.js.publish(
                a.subject, body, timeout=self.timeout, stream=self.stream, headers=headers
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in (WRONG_LAST_SEQUENCE, WRONG_LAST_SEQUENCE_CONSTANT):
                # The server checks the expected sequence before the duplicate window, so an
                # append that landed although its ack was lost comes back as a conflict when
                # retried. It is ours if the subject's last message carries our event id.
                landed = await self._landed(a.subject, headers["Nats-Msg-Id"])
                if landed is not None:
                    return landed
                m = _ACTUAL.search(exc.description or "")
                raise ConflictError(
                    a.subject, a.expected_last_seq or 0, int(m.group(1)) if m else None
                ) from exc
            if _transient(exc):
                raise TransientError(f"append to {a.subject} failed: {exc!r}") from exc
            raise
        except Exception as exc:
            if _transient(exc):
                raise TransientError(f"append to {a.subject} failed: {exc!r}") from exc
            raise
        return int(ack.seq)

    async def _head(self, subject: str, direct: bool) -> api.RawStreamMsg | None:
        """The last message on ``subject`` (None when there is none)."""
        try:
            return await self.js.get_last_msg(self.stream, subject, direct=direct)
        except nats.js.errors.NotFoundError:
            return None
        except Exception as exc:
            if _transient(exc):
                raise TransientError(f"reading the last message of {subject} failed") from exc
            raise

    async def _landed(self, subject: str, msg_id: str) -> int | None:
        """The sequence of the last message on ``subject`` if it is the append ``msg_id``."""
        # A direct get: cluster users may not use the stream's message-get API. On a replicated
        # stream a lagging replica could miss our append; that reports a conflict, which the
        # caller resolves by reading again, never a lost or doubled event.
        last = await self._head(subject, direct=True)
        if last is not None and last.headers and last.headers.get("Nats-Msg-Id") == msg_id:
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
        time_text = _ce_time(now)
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
        msg = await self._head(subject, direct=True)
        return 0 if msg is None else int(msg.seq or 0)

    async def read_last(self, subject: str) -> Envelope | None:
        """The last message on ``subject`` (wildcards allowed), decoded; None if there is none.

        Raises :class:`DecodeError` when that message is not a valid event.
        """
        msg = await self._head(subject, direct=True)
        if msg is None:
            return None
        return decode_message(
            msg.subject or subject,
            int(msg.seq or 0),
            msg.time or datetime.now(UTC),
            msg.headers,
            msg.data or b"",
        )

    async def read_last_per_subject(self, filter_subject: str) -> dict[str, Envelope | DecodeError]:
        """The last message of every subject under ``filter_subject``, decoded."""
        out: dict[str, Envelope | DecodeError] = {}
        async for item in self.replay(
            filter_subjects=[filter_subject], deliver=api.DeliverPolicy.LAST_PER_SUBJECT
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
        info = await self.js.stream_info(self.stream)
        last = int(info.state.last_seq)
        if info.state.messages == 0:
            return
        stop_at = min(end_seq, last) if end_seq is not None else last
        cfg = api.ConsumerConfig(
            filter_subjects=list(filter_subjects or [subjects.all_subjects(self.clusterset)]),
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
            "", stream=self.stream, config=cfg, ordered_consumer=True, idle_heartbeat=2.0
        )
        try:
            info_c = await sub.consumer_info()
            delivered = int(info_c.delivered.consumer_seq or 0) if info_c.delivered else 0
            if info_c.num_pending == 0 and delivered == 0:
                return  # nothing in range (pushed messages would count as delivered)
            while True:
                msg = await sub.next_msg(timeout=self.timeout * 2)
                item, pending, stored = _decode(msg)
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


def _position(msg: Msg) -> tuple[int, datetime, int]:
    """(stream sequence, storage time, pending) from a JetStream message's reply subject.

    The same as ``msg.metadata`` without building its objects: this runs once per event read.
    """
    try:
        seq, _, ns, pending, _ = delivery.ack_fields((msg.reply or "").encode())
    except ValueError:
        md = msg.metadata  # raises NotJSMessageError with nats-py's own message
        return md.sequence.stream, md.timestamp, md.num_pending
    return seq, _from_ns(ns), pending


def _from_ns(ns: int) -> datetime:
    """A storage time in nanoseconds since the epoch as an aware datetime (to the microsecond)."""
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _decode(msg: Msg) -> tuple[Replayed, int, datetime]:
    """The decoded message, the count still pending, and its storage time."""
    seq, time, pending = _position(msg)
    try:
        env: Envelope | DecodeError = decode_message(msg.subject, seq, time, msg.headers, msg.data)
    except DecodeError as exc:
        env = exc
    return Replayed(msg.subject, seq, env, msg), pending, time


class Follower:
    """Follow the log with an ordered consumer: last event per subject first, then every new one.

    ``on_event`` is called synchronously for each decoded envelope, in stream order, from the
    connection's reader (:mod:`engine.delivery`): it must be quick, and an exception from it is
    reported to the connection's error callback and does not stop the follower. Messages
    that do not decode are copied to the dead-letter stream with the reason, counted, logged
    with their subject and sequence, and skipped. ``caught_up`` is set once the bootstrap read
    reached the end of the log as it was when following began.
    """

    def __init__(
        self,
        log_: EventLog,
        cluster: str,
        on_event: Callable[[Envelope], None],
        on_bad: Callable[[str, int, DecodeError], None] | None = None,
        filter_subjects: Sequence[str] | None = None,
        start_seq: int | None = None,
        idle_heartbeat: float = 1.0,
    ) -> None:
        self.log = log_
        self.cluster = cluster
        self.on_event = on_event
        self.on_bad = on_bad
        self.filter_subjects = list(filter_subjects or [subjects.all_subjects(log_.clusterset)])
        self.start_seq = start_seq
        self.idle_heartbeat = idle_heartbeat
        self.caught_up = asyncio.Event()
        self.processed_seq = 0
        self.dead_letters = 0
        self._target: int | None = None
        self._sub: JetStreamContext.PushSubscription | None = None
        self._pending_dlq: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        cfg = api.ConsumerConfig(filter_subjects=self.filter_subjects)
        if self.start_seq is not None:
            cfg.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            cfg.opt_start_seq = self.start_seq
        else:
            cfg.deliver_policy = api.DeliverPolicy.LAST_PER_SUBJECT
        self._sub = await self.log.js.subscribe(
            "",
            stream=self.log.stream,
            config=cfg,
            cb=self._on_msg,
            ordered_consumer=True,
            idle_heartbeat=self.idle_heartbeat,
        )
        # Stream messages come straight from the reader from here on; what nats-py queued for
        # the callback before this line is handed over first.
        try:
            delivery.inline(self._sub, self._on_raw, self._take)
            info = await self._sub.consumer_info()
        except BaseException:
            await self.stop()
            raise
        if info.num_pending == 0:
            seq_info = info.delivered
            delivered = int(seq_info.consumer_seq or 0) if seq_info else 0
            # Nothing delivered: nothing to read. Otherwise wait for the last pushed message.
            self._target = int(seq_info.stream_seq or 0) if seq_info and delivered else 0
            if self.processed_seq >= self._target:
                self.caught_up.set()

    async def stop(self) -> None:
        if self._sub is not None:
            delivery.remove(self._sub)
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._pending_dlq:
            await asyncio.gather(*self._pending_dlq, return_exceptions=True)

    async def _on_msg(self, msg: Msg) -> None:
        self._take(msg)

    def _take(self, msg: Msg) -> None:
        seq, time, pending = _position(msg)
        self._deliver(msg.subject, seq, time, pending, msg.headers, msg.data)

    def _on_raw(
        self, subject: str, seq: int, time_ns: int, pending: int, block: bytes | None, data: bytes
    ) -> None:
        headers = parse_headers(block) if block else None
        self._deliver(subject, seq, _from_ns(time_ns), pending, headers, data)

    def _deliver(
        self,
        subject: str,
        seq: int,
        time: datetime,
        pending: int,
        headers: dict[str, str] | None,
        data: bytes,
    ) -> None:
        try:
            try:
                env = decode_message(subject, seq, time, headers, data)
            except DecodeError as exc:
                self._bad(subject, seq, data, exc)
            else:
                self.on_event(env)
        finally:  # an exception from on_event or on_bad stops neither the reading nor catch-up
            self.processed_seq = seq
            if pending == 0 or (self._target is not None and seq >= self._target):
                self.caught_up.set()

    def _bad(self, subject: str, seq: int, data: bytes, error: DecodeError) -> None:
        self.dead_letters += 1
        log.warning("event.undecodable", subject=subject, seq=seq, error=str(error)[:300])
        if self.on_bad is not None:
            self.on_bad(subject, seq, error)
        task = asyncio.get_running_loop().create_task(self._dead_letter(subject, data, seq, error))
        self._pending_dlq.add(task)
        task.add_done_callback(self._pending_dlq.discard)

    async def _dead_letter(self, subject: str, data: bytes, seq: int, error: DecodeError) -> None:
        headers = {
            "Mcsync-Dlq-Subject": subject,
            "Mcsync-Dlq-Seq": str(seq),
            "Mcsync-Dlq-Error": _ce_encode(str(error)[:1000]),
            "Nats-Msg-Id": f"dlq-{self.cluster}-{self.log.stream}-{seq}",
        }
        try:
            await self.log.js.publish(
                dead_letter_subject(self.log.clusterset, self.cluster),
                data[: ev.MAX_EVENT_BYTES],
                timeout=self.log.timeout,
                headers=headers,
            )
        except Exception as exc:  # the dead letter is best effort; the log still has the message
            log.warning("deadletter.failed", subject=subject, seq=seq, error=repr(exc))
