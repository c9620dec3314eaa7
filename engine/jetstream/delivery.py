"""Inline delivery of an ordered consumer's stream messages.

For a callback subscription nats-py hands every message through a chain: the header block is
parsed into a dictionary, a ``Msg`` is built, the message is queued to the subscription's task,
and that task awaits the callback. A follower reads the whole log when it starts (hundreds of
thousands of events for a large clusterset), and on that path the chain costs more CPU than
decoding and folding the events that come out of it.

:func:`inline` takes the stream messages of one ordered push subscription straight from the
client's protocol reader instead and calls a plain function with the raw parts: subject, stream
sequence, storage time in nanoseconds, messages pending, the header block and the payload.

* The ordered consumer's bookkeeping is kept as nats-py keeps it: a message must carry the next
  consumer sequence, otherwise the consumer is recreated from the last stream sequence handed
  over (nats-py's own reset) and the message is dropped, to come again from the new consumer.
  Heartbeats, the activity check and flow control keep working on the same state.
* Flow-control and heartbeat messages (status 100 with no body) go through nats-py as before;
  nats-py answers a flow-control request as it arrives, so its 250 ms poll for deferred
  answers is stopped.
  A message whose reply is not a JetStream ack subject cannot be placed in the stream: it is
  reported to the client's error callback and dropped (nats-py's own path would stop reading
  the connection on it).
* The handler runs in the reader: it must be synchronous and quick. A slow handler slows the
  reading of the socket (back pressure) instead of filling a queue until nats-py drops
  messages as a slow consumer. An exception from it goes to the client's error callback and
  the message counts as handed over, as with a callback.

This uses nats-py internals: the client's ``_process_msg`` and ``_subs`` and the ordered
consumer state ``_jsi`` of a subscription. ``pyproject.toml`` allows only the nats-py minor
release this was written against; the integration tests cover the gap reset, a nats-server
restart and flow control over a real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

Handler = Callable[[str, int, int, int, bytes | None, bytes], None]
"""``handler(subject, stream_seq, time_ns, pending, header_block, payload)``."""

_ProcessMsg = Callable[[int, bytes, bytes, bytes, bytes | None], Awaitable[None]]
_STATUS_100: Final = b"NATS/1.0 100"


class _Dispatch:
    """Installed once per client in place of its ``_process_msg``; routes by subscription."""

    __slots__ = ("handlers", "nc", "original")

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        # nats-py annotates the header block as bytes; its parser passes None for MSG frames.
        self.original = cast(_ProcessMsg, nc._process_msg)
        self.handlers: dict[Subscription, Handler] = {}

    async def process(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        sub = self.nc._subs.get(sid)
        handler = self.handlers.get(sub) if sub is not None else None
        control = not data and headers is not None and headers.startswith(_STATUS_100)
        if handler is None or control:
            return await self.original(sid, subject, reply, data, headers)
        assert sub is not None
        jsi = sub._jsi
        assert jsi is not None
        stats = self.nc.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        sub._received += 1
        jsi._active = True
        try:
            stream_seq, consumer_seq, time_ns, pending, meta = ack_fields(reply)
        except ValueError as exc:
            # Not a stream message of this consumer (nats-py would stop its reader on it).
            await self.nc._error_cb(exc)
            return None
        if consumer_seq != jsi._dseq:
            await jsi.reset_ordered_consumer(jsi._sseq + 1)
            return None
        jsi._dseq = consumer_seq + 1
        jsi._sseq = stream_seq
        jsi._fciseq += 1
        jsi._cmeta = meta  # read by nats-py's heartbeat check
        try:
            handler(subject.decode(), stream_seq, time_ns, pending, headers, data)
        except Exception as exc:
            await self.nc._error_cb(exc)
        return None


def ack_fields(reply: bytes) -> tuple[int, int, int, int, str]:
    """Stream sequence, consumer sequence, storage time (ns), pending, and the reply in the
    layout nats-py's heartbeat check reads, from a JetStream ack subject; ValueError if the
    reply is not one."""
    tokens = reply.split(b".")
    if len(tokens) == 9 and tokens[0] == b"$JS" and tokens[1] == b"ACK":
        # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<time>.<pending>
        meta = reply.decode()
    elif len(tokens) >= 11 and tokens[0] == b"$JS" and tokens[1] == b"ACK":
        # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<time>.
        # <pending>[.<token>]: nats-py reads the first layout's positions, so it gets that.
        tokens = [b"$JS", b"ACK", *tokens[4:11]]
        meta = b".".join(tokens).decode()
    else:
        raise ValueError(f"not a JetStream ack subject: {reply[:200]!r}")
    sseq, dseq, ts, pending = tokens[5:9]
    return int(sseq), int(dseq), int(ts), int(pending), meta


def _installed(nc: NATS) -> _Dispatch | None:
    """The dispatcher standing in for this client's ``_process_msg``, if there is one."""
    current = getattr(vars(nc).get("_process_msg"), "__self__", None)
    return current if isinstance(current, _Dispatch) else None


def _install(nc: NATS) -> _Dispatch:
    d = _Dispatch(nc)
    # An instance attribute shadows the method for this client only.
    vars(nc)["_process_msg"] = d.process
    return d


def inline(
    psub: JetStreamContext.PushSubscription, handler: Handler, queued: Callable[[Msg], Any]
) -> None:
    """Hand the stream messages of an ordered push subscription to ``handler`` from now on.

    Messages nats-py already queued for the subscription's callback are older than anything
    the reader delivers after this call: they are taken off the queue and given to ``queued``
    first, in order, so the order of the stream is kept.
    """
    sub: Subscription = psub._sub
    if sub._jsi is None or not sub._jsi._ordered:
        raise ValueError("inline delivery is for ordered push subscriptions")
    nc = psub._conn
    queue: asyncio.Queue[Msg] = sub._pending_queue
    while not queue.empty():
        msg = queue.get_nowait()
        sub._pending_size -= len(msg.data)
        queue.task_done()
        try:
            queued(msg)
        except Exception as exc:  # as a callback's exception: reported, the next one goes on
            _report(nc, exc)
    d = _installed(nc) or _install(nc)
    d.handlers[sub] = handler
    # nats-py answers a flow-control request at once for a subscription with a callback (its
    # delivered count includes every message read), so the task it starts to poll, every
    # 250 ms, for an answer it had to defer never has one to send; on an idle follower that
    # poll was half of the process's CPU (docs/performance.md §5). Unsubscribing cancels the
    # task too, so stopping it here changes nothing else.
    jsi = sub._jsi
    if sub._cb is not None and jsi._fctask is not None:
        jsi._fctask.cancel()


_reports: set[asyncio.Future[None]] = set()


def _report(nc: NATS, exc: Exception) -> None:
    """Hand an exception to the client's error callback from synchronous code."""
    future = asyncio.ensure_future(nc._error_cb(exc))
    _reports.add(future)
    future.add_done_callback(_reports.discard)


def remove(psub: JetStreamContext.PushSubscription) -> None:
    """Stop inline delivery for this subscription; the last one restores the client's own."""
    nc = psub._conn
    d = _installed(nc)
    if d is None:
        return
    d.handlers.pop(psub._sub, None)
    if not d.handlers:
        del vars(nc)["_process_msg"]
