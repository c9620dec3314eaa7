"""Pipelined JetStream publishing: many messages in flight, acks matched by reply subject.

nats-py's ``publish_async`` pays, for every message, a semaphore wait, a future with a done
callback, a random token, a JSON decode of the ack into a dataclass and a header serialisation
that strips, checks with a regular expression, translates and encodes each header. The log
appends in bulk (a publisher's bootstrap, a relist) and every message carries the same eight
headers, so :class:`Pipeline` does that work once per batch instead:

* the caller hands over the header block already encoded (``EventLog._frame``); the HPUB
  frame is built here, byte for byte what nats-py would send for the same headers (a unit test
  compares the two);
* each message's reply subject is ``<inbox>.<n>``; one subscription collects the acks into the
  batch's result list, decoded with msgspec;
* at most ``max_in_flight`` messages are unacknowledged at any time, and the whole batch has one
  deadline. What is not acked by then (a lost ack, a reconnect) is reported as such: the caller
  retries those one by one and nothing is dropped silently.

The frame is queued with the client's internal ``_send_command`` and the flusher is kicked once
per chunk with ``_flush_pending``; both are private to nats-py, so the supported nats-py range
is pinned in ``pyproject.toml`` and the frame layout is checked by a test against nats-py's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Final

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

# Queue this many frames before kicking the flusher (nats-py kicks it on every publish).
_CHUNK: Final = 256
# How often a wait for acks looks at the connection.
_POLL: Final = 0.25


class ApiError(msgspec.Struct, frozen=True, gc=False):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct, frozen=True, gc=False):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None


_decode_ack = msgspec.json.Decoder(_PubAck).decode


class NoAck(Exception):
    """No usable acknowledgement arrived for this message (yet): it must be retried."""


Outcome = int | ApiError | NoAck
"""What became of one message: its stream sequence, the server's refusal, or no ack."""


class _Batch:
    __slots__ = ("done", "outcomes", "remaining")

    def __init__(self, n: int) -> None:
        self.outcomes: list[Outcome] = [_NO_ACK] * n
        self.remaining = n
        self.done = asyncio.Event()


_NO_ACK: Final = NoAck("no acknowledgement")


class Pipeline:
    """Publishes batches of pre-encoded messages to JetStream with bounded in-flight acks."""

    def __init__(self, nc: NATS, max_in_flight: int = 4000) -> None:
        self.nc = nc
        self.max_in_flight = max_in_flight
        self._prefix = ""
        self._sub: Subscription | None = None
        self._waiting: dict[str, tuple[_Batch, int]] = {}
        self._counter = 0
        self._room = asyncio.Event()
        self._room.set()
        self._lock = asyncio.Lock()

    async def _ensure_sub(self) -> None:
        if self._sub is None:
            self._prefix = self.nc.new_inbox() + "."
            self._sub = await self.nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject, None)
        if entry is None:
            return  # an ack that came after its batch gave up on it
        batch, i = entry
        outcome: Outcome
        if msg.headers and msg.headers.get("Status") == "503":
            outcome = NoAck("no responders: the stream is unavailable")
        else:
            try:
                ack = _decode_ack(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                outcome = NoAck(f"unreadable acknowledgement {msg.data[:200]!r}")
            else:
                if ack.error is not None:
                    outcome = ack.error
                elif ack.duplicate:  # never ours to accept: the single-append path checks it
                    outcome = NoAck("acked as a duplicate")
                else:
                    outcome = ack.seq
        batch.outcomes[i] = outcome
        batch.remaining -= 1
        if batch.remaining == 0:
            batch.done.set()
        if len(self._waiting) <= self.max_in_flight // 2:
            self._room.set()

    async def publish(
        self,
        messages: Sequence[tuple[str, bytes, bytes]],
        timeout: float,
    ) -> list[Outcome]:
        """Publish ``(subject, header block, body)`` messages; wait at most ``timeout`` seconds
        in all. Each outcome is the stream sequence, the server's :class:`ApiError`, or a
        :class:`NoAck` for a message that was not sent (too large, no connection) or not acked
        in time."""
        async with self._lock:  # one batch at a time keeps the in-flight bound simple
            await self._ensure_sub()
            batch = _Batch(len(messages))
            if not messages:
                return batch.outcomes
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            nc = self.nc
            send = nc._send_command
            waiting = self._waiting
            half = self.max_in_flight // 2
            keys: list[str] = []
            try:
                for i, (subject, hdr, body) in enumerate(messages):
                    if len(waiting) >= self.max_in_flight:
                        await nc._flush_pending()
                        while len(waiting) > half:  # until acks have made room
                            self._room.clear()
                            if not await _wait(self._room, deadline, nc):
                                break
                    if loop.time() >= deadline or not nc.is_connected or nc.is_closed:
                        break  # not sent: left as NoAck for the caller to retry
                    hlen = len(hdr)
                    size = hlen + len(body)
                    if size > nc.max_payload:
                        continue  # the single-append path raises the client's clear error
                    self._counter += 1
                    reply = f"{self._prefix}{self._counter}"
                    keys.append(reply)
                    waiting[reply] = (batch, i)
                    await send(
                        b"HPUB %s %s %d %d\r\n%s%s\r\n"
                        % (subject.encode(), reply.encode(), hlen, size, hdr, body)
                    )
                    if i % _CHUNK == _CHUNK - 1:
                        await nc._flush_pending()
                batch.remaining -= len(messages) - len(keys)
                await nc._flush_pending()
                if batch.remaining > 0:
                    await _wait(batch.done, deadline, nc)
            finally:
                for reply in keys:  # forget what was not acked (in time)
                    waiting.pop(reply, None)
                if len(waiting) <= half:
                    self._room.set()
            return batch.outcomes


async def _wait(event: asyncio.Event, deadline: float, nc: NATS) -> bool:
    """Wait for ``event`` until the loop time ``deadline``; whether it was set. Give up early
    when the connection drops: the acks of what was sent before it are lost with it.

    Each wait has its own timeout: nats-py's flush swallows a cancellation, so one timeout
    around the whole batch could be lost and leave the batch waiting for ever."""
    loop = asyncio.get_running_loop()
    while not event.is_set():
        if loop.time() >= deadline or not nc.is_connected:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(min(deadline, loop.time() + _POLL)):
                await event.wait()
    return True
