"""Following the log: the last event of every subject first, then every new one, in order.

A restart must see what a live reader sees. Bootstrapping at the last message per subject would
break that whenever a subject's last message is unusable (garbage, a version this reader does
not know, an event refused on its subject): the usable event before it, which a live reader has
folded, would never be delivered. So the follower reads such a subject's history back to its
last usable event and delivers that, before it reports being caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from engine.core import events as ev
from engine.core import subjects
from engine.core.errors import DecodeError
from engine.core.fold import Envelope
from engine.jetstream import delivery, eventlog, streams, wire
from engine.observe import logs

log = logs.get("mcsync.eventlog")


class Follower:
    """Follow the log with an ordered consumer: last event per subject first, then every new one.

    ``on_event`` is called synchronously for each decoded envelope, in stream order, from the
    connection's reader (:mod:`engine.delivery`): it must be quick, and an exception from it is
    reported to the connection's error callback and does not stop the follower. Messages
    that are not usable (:class:`~engine.core.errors.DecodeError`, whatever its ``kind``) are
    copied to the dead-letter stream with the reason, counted, logged once with their subject
    and sequence, and skipped: they never replace a subject's last usable state. When one was a
    subject's last message at bootstrap, the subject's last usable event before it is read back
    and delivered (unless a newer usable one came first). ``caught_up`` is set once the
    bootstrap read reached the end of the log as it was when following began and every such
    read-back is done.
    """

    def __init__(
        self,
        log_: eventlog.EventLog,
        cluster: str,
        on_event: Callable[[Envelope], None],
        on_bad: Callable[[str, int, DecodeError], None] | None = None,
        filter_subjects: Sequence[str] | None = None,
        start_seq: int | None = None,
        idle_heartbeat: float = 1.0,
        on_readback: Callable[[str, int], None] | None = None,
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
        self.on_readback = on_readback
        self.recovered = 0
        """Subjects whose last usable event was read back behind an unusable last message."""
        self._recovering: dict[str, asyncio.Task[None]] = {}
        self._read_through = False

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
                self._read_through = True
                self._maybe_caught_up()

    async def stop(self) -> None:
        for task in list(self._recovering.values()):
            task.cancel()
        if self._recovering:
            await asyncio.gather(*self._recovering.values(), return_exceptions=True)
            self._recovering.clear()
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
        seq, time, pending = eventlog.position(msg)
        self._deliver(msg.subject, seq, time, pending, msg.headers, msg.data)

    def _on_raw(
        self, subject: str, seq: int, time_ns: int, pending: int, block: bytes | None, data: bytes
    ) -> None:
        headers = wire.parse_headers(block) if block else None
        self._deliver(subject, seq, eventlog.from_ns(time_ns), pending, headers, data)

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
                env = wire.decode_message(subject, seq, time, headers, data)
            except DecodeError as exc:
                if self.start_seq is None and not self.caught_up.is_set():
                    self._recover(subject, seq)
                self._bad(subject, seq, data, exc)
            else:
                if self._recovering:
                    self._superseded(subject)
                self.on_event(env)
        finally:  # an exception from on_event or on_bad stops neither the reading nor catch-up
            self.processed_seq = seq
            if pending == 0 or (self._target is not None and seq >= self._target):
                self._read_through = True
                if not self._recovering:
                    self.caught_up.set()

    # --- reading back behind an unusable last message ----------------------------------------

    def _recover(self, subject: str, bad_seq: int) -> None:
        if subject in self._recovering:
            return  # already reading back (a later bad message changes nothing)
        task = asyncio.get_running_loop().create_task(self._read_back(subject, bad_seq))
        self._recovering[subject] = task

    def _superseded(self, subject: str) -> None:
        """A usable event arrived on a subject being read back: it is newer, so it wins."""
        task = self._recovering.pop(subject, None)
        if task is not None:
            task.cancel()
            self._maybe_caught_up()

    def _maybe_caught_up(self) -> None:
        if self._read_through and not self._recovering:
            self.caught_up.set()

    async def _read_back(self, subject: str, bad_seq: int) -> None:
        """Deliver the last usable event of ``subject`` before ``bad_seq``, if there is one."""
        backoff = 0.1
        try:
            while True:
                try:
                    found: Envelope | None = None
                    async for item in self.log.replay(
                        filter_subjects=[subject], end_seq=bad_seq - 1
                    ):
                        if isinstance(item.result, Envelope) and item.seq < bad_seq:
                            found = item.result
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # transient or not, the state must come back: retry
                    log.warning("readback.retrying", subject=subject, error=repr(exc)[:300])
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            if self._recovering.get(subject) is not asyncio.current_task():
                return  # superseded meanwhile
            del self._recovering[subject]
            if found is not None:
                self.recovered += 1
                if self.on_readback is not None:
                    self.on_readback(subject, found.seq)
                log.info("readback.delivered", subject=subject, seq=found.seq, unusable_seq=bad_seq)
                try:
                    self.on_event(found)
                except Exception as exc:  # as from the reader: reported, reading goes on
                    log.error("on_event.failed", subject=subject, seq=found.seq, error=repr(exc))
            self._maybe_caught_up()
        except asyncio.CancelledError:
            if self._recovering.get(subject) is asyncio.current_task():
                del self._recovering[subject]
            raise

    def _bad(self, subject: str, seq: int, data: bytes, error: DecodeError) -> None:
        self.dead_letters += 1
        log.warning(
            "event.unusable", subject=subject, seq=seq, kind=error.kind, error=str(error)[:300]
        )
        if self.on_bad is not None:
            self.on_bad(subject, seq, error)
        task = asyncio.get_running_loop().create_task(self._dead_letter(subject, data, seq, error))
        self._pending_dlq.add(task)
        task.add_done_callback(self._pending_dlq.discard)

    async def _dead_letter(self, subject: str, data: bytes, seq: int, error: DecodeError) -> None:
        headers = {
            "Mcsync-Dlq-Subject": subject,
            "Mcsync-Dlq-Seq": str(seq),
            "Mcsync-Dlq-Error": wire.ce_encode(str(error)[:1000]),
            "Mcsync-Dlq-Kind": error.kind,
            "Nats-Msg-Id": f"dlq-{self.cluster}-{self.log.stream}-{seq}",
        }
        try:
            await self.log.js.publish(
                streams.dead_letter_subject(self.log.clusterset, self.cluster),
                data[: ev.MAX_EVENT_BYTES],
                timeout=self.log.timeout,
                headers=headers,
            )
        except Exception as exc:  # the dead letter is best effort; the log still has the message
            log.warning("deadletter.failed", subject=subject, seq=seq, error=repr(exc))
