"""Cross-cluster leadership for controllers: the I/O shell around :mod:`engine.leases`.

``Elector`` campaigns for one lease on the log and tells its owner when leadership is gained
and lost; ``async with elector.leading() as lead:`` waits until this candidate leads and gives
the fencing token (``lead.token``), the holder identity and ``lead.valid()``, which a
controller checks before each guarded write. Leadership ends when the body leaves (the lease is
released), when a renewal could not be appended before the renew deadline (the holder steps
down before anyone else may take over), or when the log shows another holder.

Every lease event is appended on this cluster's own subject of the lease with a compare-and-set
against the last sequence of the wildcard over all clusters' subjects of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from engine import jetstream
from engine.core import events as ev
from engine.core import leases, subjects
from engine.core.errors import ConflictError, DecodeError, TransientError
from engine.observe import logs

log = logs.get("mcsync.leadership")


@dataclass
class Leadership:
    """One tenure of this candidate."""

    name: str
    holder: str
    token: int
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    _elector: Elector | None = None

    def valid(self) -> bool:
        """True while this tenure holds: check before every fenced action."""
        e = self._elector
        return not self.lost.is_set() and e is not None and e.token == self.token and e.is_leader()


Callback = Callable[[int], Awaitable[None] | None]


class Elector:
    """Campaign for lease ``name`` as ``identity`` (unique per process) in ``cluster``."""

    def __init__(
        self,
        log_: jetstream.EventLog,
        cluster: str,
        name: str,
        identity: str,
        timing: leases.Timing | None = None,
        on_gained: Callback | None = None,
        on_lost: Callback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log_
        self.cluster = cluster
        self.name = name
        self.identity = identity
        self.timing = timing or leases.Timing()
        self.on_gained = on_gained
        self.on_lost = on_lost
        self.clock = clock
        self.subject = subjects.lease(log_.clusterset, cluster, name)
        self.scope = subjects.lease_any_cluster(log_.clusterset, name)
        self.observed = leases.Observed(0, None, clock())
        self.token: int | None = None
        self._until = 0.0
        self._renew_sent: float | None = None
        self._changed = asyncio.Event()
        self.tenure: Leadership | None = None
        self.lost_at: float | None = None
        """When the last tenure ended (at the latest, its renew deadline)."""
        self._log = log.bind(lease=name, identity=identity, cluster=cluster)

    def is_leader(self) -> bool:
        return self.token is not None and self.clock() < self._until

    async def _observe(self) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that lands together with the reply, and a cancelled elector must stop.
        try:
            async with asyncio.timeout(self.timing.retry_interval * 4):
                env = await self.log.read_last(self.scope)
        except (TransientError, TimeoutError) as exc:
            self._log.debug("lease.observe_failed", error=repr(exc))
            return
        except DecodeError as exc:
            self._log.warning("lease.undecodable", error=str(exc)[:200])
            return
        if env is None:
            return
        if env.seq != self.observed.seq:
            event = env.event
            if isinstance(event, ev.LeaseAcquired | ev.LeaseReleased):
                parsed = subjects.parse(env.subject)
                if parsed.cluster != event.cluster:
                    self._log.warning("lease.foreign_claim_ignored", subject=env.subject)
                    return
                self.observed = leases.Observed(env.seq, event, self.clock())

    async def _append(self, event: ev.Event, expected: int) -> int:
        bound = max(0.05, min(self.log.timeout, self._remaining() or self.log.timeout))
        async with asyncio.timeout(bound):
            return await self.log.append(
                jetstream.Append(self.subject, event, expected, expected_subject=self.scope)
            )

    def _remaining(self) -> float | None:
        if self.token is None:
            return None
        return self._until - self.clock()

    async def _gain(self, token: int) -> None:
        self.token = token
        self.tenure = Leadership(self.name, self.identity, token, _elector=self)
        self._log.info("lease.gained", token=token)
        if self.on_gained is not None:
            r = self.on_gained(token)
            if r is not None:
                await r

    async def _lose(self, why: str) -> None:
        if self.token is None:
            return
        token = self.token
        # A tenure ends at its deadline even if we notice later (a busy event loop).
        self.lost_at = min(self.clock(), self._until)
        self.token = None
        self._renew_sent = None
        if self.tenure is not None:
            self.tenure.lost.set()
        (self._log.info if why == "released" else self._log.warning)(
            "lease.lost", token=token, why=why
        )
        if self.on_lost is not None:
            r = self.on_lost(token)
            if r is not None:
                await r

    async def step(self) -> float:
        """One round: observe, decide, act. Returns how long to sleep."""
        await self._observe()
        now = self.clock()
        if self.token is not None:
            if now >= self._until:
                await self._lose("renew deadline passed")
            elif leases.holder_of(self.observed) not in (None, self.identity):
                await self._lose(f"the log shows holder {leases.holder_of(self.observed)}")
        action = leases.decide(self.observed, self.identity, now, self.timing, self._renew_sent)
        if action.kind == "wait":
            wake = action.at
            if self.token is not None:
                wake = min(wake, self._until)
            return max(0.0, min(wake - now, self.timing.retry_interval))
        event: ev.Event
        if action.kind == "acquire":
            event = ev.LeaseAcquired(
                cluster=self.cluster,
                name=self.name,
                holder=self.identity,
                duration_seconds=self.timing.duration,
                token=action.token,
            )
        else:
            event = ev.LeaseRenewed(
                cluster=self.cluster,
                name=self.name,
                holder=self.identity,
                duration_seconds=self.timing.duration,
                token=action.token,
            )
        sent = self.clock()
        try:
            seq = await self._append(event, action.expected_seq)
        except ConflictError:
            self._log.debug("lease.race_lost", action=action.kind)
            return 0.0
        except (TransientError, TimeoutError) as exc:
            self._log.warning("lease.append_failed", action=action.kind, error=repr(exc)[:200])
            return self.timing.retry_interval
        self.observed = leases.Observed(seq, event, self.clock())
        self._renew_sent = sent
        self._until = leases.leader_until(sent, self.timing)
        if action.kind == "acquire" or self.token is None:
            await self._gain(action.token)
        return max(0.0, min(self.timing.renew_interval, self._until - self.clock()))

    async def run(self) -> None:
        """Campaign until cancelled; on cancel, release the lease if held."""
        watchdog = asyncio.create_task(self._watchdog())
        try:
            while True:
                delay = await self.step()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._changed.wait()
                self._changed.clear()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            # Release on the way out, bounded: a dead connection must not hang the shutdown.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.log.timeout * 2):
                    await asyncio.shield(self.release())

    async def _watchdog(self) -> None:
        """Step down at the deadline even if the log does not answer."""
        while True:
            await asyncio.sleep(0.02)
            if self.token is not None and self.clock() >= self._until:
                await self._lose("renew deadline passed")

    async def release(self) -> None:
        """Give the lease up (if held) so another candidate may take it at once."""
        token = self.token
        if token is None:
            return
        await self._lose("released")
        event = ev.LeaseReleased(
            cluster=self.cluster, name=self.name, holder=self.identity, token=token
        )
        try:
            async with asyncio.timeout(self.log.timeout):
                await self.log.append(
                    jetstream.Append(
                        self.subject, event, self.observed.seq, expected_subject=self.scope
                    )
                )
        except (ConflictError, TransientError, TimeoutError) as exc:
            self._log.info("lease.release_skipped", error=repr(exc)[:200])

    @contextlib.asynccontextmanager
    async def leading(self) -> AsyncIterator[Leadership]:
        """Campaign; enter once leading; release on exit."""
        task = asyncio.create_task(self.run())
        try:
            while self.tenure is None or self.tenure.lost.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
            yield self.tenure
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
