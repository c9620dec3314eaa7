"""The subscriber: one per cluster, it makes this cluster hold what the clusterset says.

It follows the log (last event per subject first, then every new one), folds it into the
clusterset state, and reconciles every service whose state changed: plan the desired objects
(:mod:`engine.plan`), compare them with what the cluster holds (informer caches), and write only
the differences with server-side apply under one field manager. Keys are coalesced on the
trailing edge: a service is reconciled once its events have paused for ``quiet_seconds`` (a
churning one: ``burst_quiet_seconds``; at the latest after ``max_delay_seconds``), so a burst of
events leads to one write of the latest state. Objects mcsync owns that are no longer desired
are deleted. Transient API errors are retried with backoff; permanent ones (validation,
conflicts) are logged and counted, not looped on.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from engine import jetstream, kube
from engine.core import events as ev
from engine.core import fold as folding
from engine.core import inventory, mcs, plan
from engine.core.errors import DecodeError, PermanentError, TransientError
from engine.observe import logs
from engine.observe.metrics import Metrics
from subscribers import warmstart
from subscribers.leaseview import LeaseView
from subscribers.profiles import ProfileSync

log = logs.get("mcsync.subscriber")

ServiceKey = tuple[str, str]

# Apply order within one service: the derived Service first (its ClusterIP feeds the import).
_ORDER: dict[plan.Kind, int] = {
    "Service": 0,
    "ServiceImport": 1,
    "ServiceImportStatus": 2,
    "EndpointSlice": 3,
    "ServiceExportStatus": 4,
}


@dataclass
class SubscriberSettings:
    """Tunables of a subscriber."""

    concurrency: int = 8
    """Services reconciled at once."""
    retry_for: float = 30.0
    """How long transient API errors of one write are retried before the key is requeued."""
    inventory_namespace: str = "mcsync-system"
    """Where ClusterProfiles are written (nothing is written while it does not exist)."""
    lease_seconds: float = 30.0
    """Heartbeat lease: a member silent this long is Unknown and handled by the policy."""
    staleness_policy: inventory.StalenessPolicy = "withdraw"
    """``withdraw``: a stale member's exports and endpoints leave every import until its next
    heartbeat; ``keep``: they stay."""
    tick_seconds: float = 1.0
    """How often leases are re-evaluated."""
    lease_namespace: str = "mcsync-system"
    """Where the cross-cluster leases are shown as coordination.k8s.io Leases."""
    quiet_seconds: float = 0.05
    """Trailing-edge coalescing: a changed service is reconciled once no event has touched it
    for this long (seconds), so the events of one change (an export and its slices) become one
    reconcile. It is also the delay an isolated change waits before it is applied."""
    burst_quiet_seconds: float = 0.25
    """A service whose events have gone on for longer than ``quiet_seconds`` is churning: it
    is reconciled once its events pause for this long instead, so a burst becomes one write of
    its last state."""
    max_delay_seconds: float = 1.0
    """However long a burst lasts, a changed service is reconciled at most this long (seconds)
    after its first pending change."""
    state_dir: str | None = None
    """Where the folded state is saved for a warm restart (:mod:`subscribers.warmstart`); None:
    every start bootstraps from the log in full."""
    snapshot_seconds: float = 60.0
    """How often the folded state is saved (when it moved on); it is saved on stop too."""


@dataclass
class Subscriber:
    k8s: kube.Kube
    log: jetstream.EventLog
    cluster: str
    metrics: Metrics = field(default_factory=Metrics)
    settings: SubscriberSettings = field(default_factory=SubscriberSettings)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self.state = folding.ClusterSetState()
        self.dirty: dict[ServiceKey, datetime | None] = {}
        """Services waiting for a reconcile, with the log time of their oldest pending event."""
        # Per dirty service: loop times of its first and last pending event, and whether it was
        # already churning when they began; per reconciled service, its last event's time.
        self._first: dict[ServiceKey, float] = {}
        self._last: dict[ServiceKey, float] = {}
        self._churning: set[ServiceKey] = set()
        self._previous: dict[ServiceKey, float] = {}
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()
        self.reconciles = 0
        self._timer: asyncio.TimerHandle | None = None
        self._log = log.bind(cluster=self.cluster, clusterset=self.log.clusterset)
        self.namespaces = kube.Informer(self.k8s, kube.NAMESPACES, self._on_namespace)
        # The caches of what mcsync writes for services would be its largest: they keep a
        # digest of each object (plan.Written), not the object. Derived Services and slices are
        # indexed by the service they belong to, so pruning one service looks at its own
        # objects only, however many the cluster holds.
        self._owners: dict[ServiceKey, ServiceKey] = {}
        self.imports = kube.Informer(
            self.k8s, kube.SERVICE_IMPORTS, self._on_owned, keep=self._keeper("ServiceImport")
        )
        self.services = kube.Informer(
            self.k8s,
            kube.SERVICES,
            self._on_owned,
            label_selector=f"{plan.LABEL_MANAGED_BY}={plan.MANAGED_BY}",
            index_key=_owning_service,
            keep=self._keeper("Service"),
        )
        self.slices = kube.Informer(
            self.k8s,
            kube.ENDPOINT_SLICES,
            self._on_owned,
            label_selector=f"{plan.LABEL_SLICE_MANAGED_BY}={plan.MANAGED_BY}",
            index_key=_owning_service,
            keep=self._keeper("EndpointSlice"),
        )
        self.exports = kube.Informer(self.k8s, kube.SERVICE_EXPORTS, self._on_local_export)
        self.follower = jetstream.Follower(
            self.log,
            self.cluster,
            self._on_event,
            on_bad=self._on_bad,
            on_readback=lambda subject, seq: self.metrics.readbacks.labels(self.cluster).inc(),
        )
        self.lease = timedelta(seconds=self.settings.lease_seconds)
        self.profiles = ProfileSync(
            self.k8s,
            self.cluster,
            self.settings.inventory_namespace,
            self.lease,
            self.metrics,
            self._on_profile,
        )
        self._profiles_dirty = True
        self.lease_view = LeaseView(
            self.k8s, self.cluster, self.settings.lease_namespace, self.metrics, self._on_lease_obj
        )
        self._leases_dirty = True
        self._log_time: datetime | None = None
        self._resumed_at: datetime | None = None
        self._admitted: frozenset[str] = frozenset()
        self._members: frozenset[str] = frozenset()
        self._health: dict[str, tuple[str, bool]] = {}
        self._events_in: dict[type, Any] = {}
        self.saver: warmstart.Saver | None = None
        if self.settings.state_dir is not None:
            path = warmstart.path_for(self.settings.state_dir, self.log, self.cluster)
            self.saver = warmstart.Saver(self.log, path, self.cluster, self.metrics)

    @property
    def informers(self) -> tuple[kube.Informer, ...]:
        return (
            self.namespaces,
            self.imports,
            self.services,
            self.slices,
            self.exports,
            self.profiles.informer,
            self.lease_view.informer,
        )

    def now(self) -> datetime:
        """The log's clock: the storage time of the newest event read, and nothing else.

        Staleness is judged on this clock alone, so it is evidence from the log itself: a member
        goes stale when other members' heartbeats carry the log past its lease. A subscriber cut
        off from the log (the hub down, this cluster or its leaf partitioned) sees the clock
        stop, so it withdraws nothing; it never extrapolates with its own clock, which would
        make every other member look dead exactly when only the reader is.
        """
        if self._log_time is None:
            return self.clock()
        return self._log_time

    def admitted(self) -> frozenset[str]:
        return inventory.admitted(
            self.state, self.now(), self.lease, self.settings.staleness_policy, self._resumed_at
        )

    # --- inputs ----------------------------------------------------------------------------

    def _mark(self, key: ServiceKey, when: datetime | None = None, at_once: bool = False) -> None:
        """Note that ``key`` needs a reconcile (``when``: the log time of the change). It runs
        once the key has been quiet for ``quiet_seconds``, or ``at_once``."""
        prev = self.dirty.get(key)
        if key not in self.dirty or (when is not None and (prev is None or when < prev)):
            self.dirty[key] = when
        now = asyncio.get_running_loop().time()
        if at_once:
            self._first[key] = now - self.settings.max_delay_seconds
        elif key not in self._first:
            self._first[key] = now
            # Events again soon after the last reconcile's: the burst goes on.
            previous = self._previous.pop(key, None)
            if previous is not None and now - previous < self.settings.burst_quiet_seconds:
                self._churning.add(key)
        self._last[key] = now
        self._wake.set()

    def _on_event(self, env: folding.Envelope) -> None:
        event = env.event
        if self._log_time is None or env.time > self._log_time:
            if (
                self._log_time is not None
                and self.follower.caught_up.is_set()
                and env.time - self._log_time > self.lease / 2
            ):
                # The log itself was silent (its server away): nobody's silence counts before
                # it came back, or every member would look dead for the moment between the
                # first heartbeat after the return and the others'.
                self._resumed_at = env.time
                self._log.info(
                    "log.resumed", silent_seconds=round((env.time - self._log_time).total_seconds())
                )
            self._log_time = env.time
        counter = self._events_in.get(type(event))
        if counter is None:  # a labelled child per event type, looked up once
            counter = self.metrics.events_in.labels(self.cluster, ev.tag_of(type(event)))
            self._events_in[type(event)] = counter
        counter.inc()
        before = self.state.counters.refused
        if not folding.apply(self.state, env):
            if self.state.counters.refused > before:
                self.metrics.refused.labels(self.cluster).inc()
                self._log.warning(
                    "event.refused", subject=env.subject, seq=env.seq, claimed=event.cluster
                )
            return
        match event:
            case ev.ExportUpserted() | ev.ExportWithdrawn():
                self._mark((event.namespace, event.name), env.time)
            case ev.SliceUpserted() | ev.SliceRemoved():
                self._mark((event.namespace, event.service), env.time)
            case ev.ClusterJoined() | ev.ClusterLeft():
                self._profiles_dirty = True
                self._wake.set()
                self._reassess()
            case ev.Heartbeat():
                self._reassess()
            case ev.LeaseAcquired() | ev.LeaseReleased():
                self._leases_dirty = True
                self._wake.set()
            case _:
                pass

    def _on_bad(self, subject: str, seq: int, error: DecodeError) -> None:
        self.metrics.dead_letters.labels(self.cluster).inc()
        self.metrics.unusable.labels(self.cluster, error.kind).inc()

    def _reassess(self) -> None:
        """Re-evaluate leases and health: a change marks the affected services and profiles."""
        if not self.ready.is_set() and not self.follower.caught_up.is_set():
            return  # the first full reconcile will look at everything
        now = self.now()
        admitted = self.admitted()
        members = frozenset(inventory.members(self.state))
        turned = admitted ^ self._admitted
        changed = turned | (members ^ self._members)
        if changed:
            self._admitted = admitted
            self._members = members
            for key, by_cluster in self.state.exports.items():
                if changed & by_cluster.keys():
                    self._mark(key)
            # Each admission or withdrawal once; only a withdrawal is worth a warning.
            for c in sorted(turned):
                if c in admitted:
                    self._log.info(
                        "member.admitted", member=c, policy=self.settings.staleness_policy
                    )
                else:
                    self._log.warning(
                        "member.withdrawn", member=c, policy=self.settings.staleness_policy
                    )
        health: dict[str, tuple[str, bool]] = {
            c: (
                inventory.health(r, now, self.lease, self._resumed_at).status,
                inventory.duplicate(r, now, self.lease),
            )
            for c, r in inventory.members(self.state).items()
        }
        if health != self._health:
            for c, (_, dup) in health.items():
                self.metrics.duplicate_ids.labels(c).set(1 if dup else 0)
                if dup and not self._health.get(c, ("", False))[1]:
                    self._log.error("member.duplicate_cluster_id", member=c)
            self._health = health
            self._profiles_dirty = True
            self._wake.set()

    def _on_profile(self, old: kube.Obj | None, new: kube.Obj | None) -> None:
        if new is None or old is None:
            self._profiles_dirty = True
            self._wake.set()

    def _on_lease_obj(self, old: kube.Obj | None, new: kube.Obj | None) -> None:
        if new is None or old is None:
            self._leases_dirty = True
            self._wake.set()

    def _namespace_live(self, ns: str) -> bool:
        """The namespace exists and is not being deleted: mcsync writes only into such."""
        return _live(self.namespaces.get("", ns))

    def _on_namespace(self, old: kube.Obj | None, new: kube.Obj | None) -> None:
        if _live(old) == _live(new):
            return  # created or deleted as far as mcsync cares: nothing changed
        ns = (new or old or {})["metadata"]["name"]
        if ns == self.settings.inventory_namespace:
            self._profiles_dirty = True
        if ns == self.settings.lease_namespace:
            self._leases_dirty = True
        for key in [k for k in self.state.exports if k[0] == ns]:
            self._mark(key)

    def _keeper(self, kind: plan.Kind) -> Callable[[kube.Obj], plan.Written]:
        """What the cache of ``kind`` keeps of each object: its digest (plan.Written), with
        the owning service's key shared by all the objects of that service."""

        def keep(obj: kube.Obj) -> plan.Written:
            meta = obj.get("metadata") or {}
            ns = str(meta.get("namespace", ""))
            if kind == "ServiceImport":
                name = str(meta.get("name", ""))
            else:
                name = str((meta.get("labels") or {}).get(plan.LABEL_SERVICE_NAME, ""))
            key = (ns, name)
            owner = self._owners.get(key)
            if owner is None:
                if len(self._owners) > 2 * len(self.state.exports) + 4096:
                    self._owners.clear()  # services long gone: start over
                owner = self._owners[key] = key
            return plan.written(kind, obj, owner)

        return keep

    def _on_owned(self, old: Any, new: Any) -> None:
        if isinstance(new or old, plan.Written):
            self._mark((new or old).owner)
            return
        obj = new or old or {}
        meta = obj.get("metadata", {})
        labels = meta.get("labels") or {}
        name = labels.get(plan.LABEL_SERVICE_NAME) if obj.get("kind") != "ServiceImport" else None
        self._mark((meta.get("namespace", ""), name or meta.get("name", "")))

    def _on_local_export(self, old: kube.Obj | None, new: kube.Obj | None) -> None:
        self._mark(kube.key_of(new or old or {}))

    # --- reconcile -------------------------------------------------------------------------

    def _observed(self, kind: plan.Kind, ns: str, name: str) -> Any:
        """What the cluster holds: a ServiceExport, or what is kept of an object mcsync
        writes (plan.Written)."""
        return self._informer(kind).get(ns, name)

    def _informer(self, kind: plan.Kind) -> kube.Informer:
        match kind:
            case "ServiceImport" | "ServiceImportStatus":
                return self.imports
            case "Service":
                return self.services
            case "EndpointSlice":
                return self.slices
            case "ServiceExportStatus":
                return self.exports

    def desired(self, key: ServiceKey) -> dict[plan.ObjKey, kube.Obj]:
        ns, name = key
        exports: Mapping[str, ev.ExportUpserted] = self.state.exports.get(key, {})
        view = mcs.view(ns, name, exports, self._admitted, self._members)
        derived = self.services.get(ns, plan.derived_name(ns, name))
        allocated = None
        if isinstance(derived, plan.Written) and isinstance(derived.detail, plan.Allocated):
            allocated = derived.detail
        return plan.desired_for_service(
            self.cluster,
            view,
            self.state.slices.get(key, {}),
            exports,
            namespace_exists=self._namespace_live(ns),
            allocated=allocated,
        )

    async def reconcile(self, key: ServiceKey) -> None:
        """Bring one service's objects in this cluster to the desired state.

        The derived Service goes first: once it is written, its ClusterIP is known and the
        rest is planned again with it, so a new import is written once, with its ``spec.ips``,
        and its status once, Ready.
        """
        desired = self.desired(key)
        wrote_service = False
        for okey, obj in desired.items():
            if okey[0] == "Service" and await self._write_if_changed(okey, obj):
                wrote_service = True
        if wrote_service:
            desired = self.desired(key)
        for okey in sorted(desired, key=lambda k: (_ORDER[k[0]], k[2])):
            if okey[0] != "Service":
                await self._write_if_changed(okey, desired[okey])
        await self._prune(key, desired)
        self.reconciles += 1

    async def _write_if_changed(self, okey: plan.ObjKey, obj: kube.Obj) -> bool:
        """Write one desired object unless the cluster already holds it; whether it wrote."""
        kind, ns, name = okey
        observed = self._observed(kind, ns, name)
        if kind == "ServiceExportStatus":
            if observed is None:
                return False  # the ServiceExport is not (yet) in our cache
            seen = ((observed or {}).get("status") or {}).get("conditions")
            obj = _with_times(obj, seen, self.clock())
            if plan.up_to_date(kind, obj, observed):
                return False
            await self._write(kind, obj)
            return True
        if kind == "ServiceImportStatus":
            if observed is None:
                return False  # written once the import exists
            obj = _with_times(obj, plan.observed_conditions(observed), self.clock())
        digest = plan.fingerprint(kind, obj)
        if observed is not None and plan.holds(kind, digest, observed):
            return False
        version = await self._write(kind, obj)
        if version:
            self._note_applied(kind, ns, name, digest, version)
        return True

    def _note_applied(
        self, kind: plan.Kind, ns: str, name: str, digest: bytes, version: int
    ) -> None:
        """After a write: if the cluster shows the written fields differently (another
        manager's or a server default on top), what was written counts as current until the
        object changes again (at this ``version`` only), so it is not written at every
        reconcile."""
        kept = self._informer(kind).get(ns, name)
        if (
            isinstance(kept, plan.Written)
            and kept.version == version
            and not plan.holds(kind, digest, kept)
        ):
            kept.applied = (*kept.applied[-3:], digest)

    async def _retrying(self, call: Callable[[], Awaitable[object]]) -> None:
        """Run one API write, retrying transient failures with backoff for ``retry_for``."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_delay(self.settings.retry_for),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.2),
            reraise=True,
        ):
            with attempt:
                await call()

    async def _write(self, kind: plan.Kind, obj: kube.Obj) -> int:
        """Apply one object; the resourceVersion of the API's answer (0: not written)."""
        sub = "status" if kind.endswith("Status") else None
        informer = self._informer(kind)
        answers: list[kube.Obj] = []

        async def apply() -> None:
            answers.append(await informer.apply(obj, subresource=sub))

        try:
            await self._retrying(apply)
        except PermanentError as exc:
            if "being terminated" in str(exc):
                # The namespace started terminating after the plan: expected, nothing to do.
                self._log.info(
                    "apply.skipped",
                    reason="namespace terminating",
                    kind=kind,
                    namespace=obj["metadata"].get("namespace"),
                    name=obj["metadata"]["name"],
                )
                return 0
            self.metrics.errors.labels(self.cluster, f"apply:{kind}", "false").inc()
            self._log.error(
                "apply.refused",
                kind=kind,
                namespace=obj["metadata"].get("namespace"),
                name=obj["metadata"]["name"],
                error=str(exc)[:500],
            )
            return 0
        self.metrics.writes.labels(self.cluster, kind, "apply").inc()
        rv = (answers[-1].get("metadata") or {}).get("resourceVersion") if answers else None
        return int(rv) if rv else 0

    async def _prune(self, key: ServiceKey, desired: dict[plan.ObjKey, kube.Obj]) -> None:
        ns, name = key
        doomed: list[tuple[plan.Kind, str]] = []
        if ("ServiceImport", ns, name) not in desired and self.imports.get(ns, name) is not None:
            doomed.append(("ServiceImport", name))
        owned: tuple[tuple[plan.Kind, kube.Informer], ...] = (
            ("Service", self.services),
            ("EndpointSlice", self.slices),
        )
        for kind, informer in owned:
            for ons, oname in sorted(informer.group(key)):
                if (kind, ons, oname) not in desired:
                    doomed.append((kind, oname))
        for kind, oname in doomed:
            informer = self._informer(kind)
            try:
                await self._retrying(functools.partial(informer.delete, ns, oname))
            except TransientError as exc:  # still failing after retry_for: try again later
                self._log.warning("delete.failed", kind=kind, name=oname, error=str(exc)[:200])
                self._mark(key)
                continue
            except PermanentError as exc:
                self._log.error("delete.refused", kind=kind, name=oname, error=str(exc)[:200])
                continue
            self.metrics.writes.labels(self.cluster, kind, "delete").inc()

    def _all_keys(self) -> set[ServiceKey]:
        keys = set(self.state.exports)
        keys |= set(self.imports.cache)
        keys |= set(self.exports.cache)
        for informer in (self.services, self.slices):
            for obj in informer.cache.values():
                owner = _owning_service(obj)
                if owner is not None:
                    keys.add(owner)
        return keys

    def _due(self) -> dict[ServiceKey, datetime | None]:
        """Take the dirty services that are due: quiet for ``quiet_seconds`` (churning ones for
        ``burst_quiet_seconds``) or waiting since ``max_delay_seconds``. The others stay dirty,
        and a timer wakes the loop when the first of them is due."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        quiet = self.settings.quiet_seconds
        burst_quiet = self.settings.burst_quiet_seconds
        cap = self.settings.max_delay_seconds
        due: dict[ServiceKey, datetime | None] = {}
        later: dict[ServiceKey, datetime | None] = {}
        wake_at = float("inf")
        if len(self._previous) > 4096:  # only recent ones matter
            self._previous = {k: t for k, t in self._previous.items() if now - t < burst_quiet}
        for key, since in self.dirty.items():
            at = due_at(
                self._first[key], self._last[key], quiet, burst_quiet, cap, key in self._churning
            )
            if at <= now + 0.001:  # a timer may fire up to the clock's resolution early
                due[key] = since
                self._previous[key] = self._last.pop(key)
                del self._first[key]
                self._churning.discard(key)
            else:
                later[key] = since
                wake_at = min(wake_at, at)
        self.dirty = later
        if later and (self._timer is None or self._timer.when() > wake_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(wake_at, self._on_timer)
        return due

    def _on_timer(self) -> None:
        self._timer = None
        self._wake.set()

    async def _drain(self) -> None:
        if self._profiles_dirty:
            self._profiles_dirty = False
            try:
                await self.profiles.reconcile(
                    self.state,
                    self.now(),
                    self._namespace_live(self.settings.inventory_namespace),
                    self._resumed_at,
                )
            except TransientError as exc:
                self._log.warning("profiles.retry", error=str(exc)[:300])
                self._profiles_dirty = True
        if self._leases_dirty:
            self._leases_dirty = False
            try:
                await self.lease_view.reconcile(
                    self.state,
                    self._namespace_live(self.settings.lease_namespace),
                )
            except TransientError as exc:
                self._log.warning("leases.retry", error=str(exc)[:300])
                self._leases_dirty = True
        sem = asyncio.Semaphore(self.settings.concurrency)
        batch = self._due()

        async def one(key: ServiceKey, since: datetime | None) -> None:
            async with sem:
                try:
                    await self.reconcile(key)
                except TransientError as exc:
                    self.metrics.errors.labels(self.cluster, "reconcile", "true").inc()
                    self._log.warning("reconcile.retry", key="/".join(key), error=str(exc)[:300])
                    self._mark(key, since)
                    return
                if since is not None:
                    lag = (self.clock() - since).total_seconds()
                    self.metrics.lag.labels(self.cluster).observe(max(lag, 0.0))

        await asyncio.gather(*(one(k, t) for k, t in batch.items()))

    async def run(self) -> None:
        """Run until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for informer in self.informers:
                tg.create_task(informer.run())
            await asyncio.gather(*(i.synced.wait() for i in self.informers))
            if self.saver is not None:
                await self._restore(self.saver)
            await self.follower.start()
            try:
                await self.follower.caught_up.wait()
                if self.saver is not None:
                    await self.saver.identify()
                    tg.create_task(self._snapshots(self.saver))
                self._admitted = self.admitted()
                self._members = frozenset(inventory.members(self.state))
                self._health = {}
                self._reassess()
                for key in self._all_keys():
                    self._mark(key, at_once=True)
                await self._drain()
                self.metrics.ready.labels(self.cluster).set(1)
                self.ready.set()
                self._log.info(
                    "subscriber.ready",
                    position=self.state.position,
                    services=len(self.state.exports),
                )
                tg.create_task(self._tick())
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    if self.dirty or self._profiles_dirty or self._leases_dirty:
                        await self._drain()
            finally:
                if self._timer is not None:
                    self._timer.cancel()
                await self.follower.stop()
                if self.saver is not None and self.follower.caught_up.is_set():
                    try:
                        self.saver.save(self.state, self._log_time)
                    except OSError as exc:
                        self._log.warning("snapshot.save_failed", error=repr(exc)[:300])

    async def _restore(self, saver: warmstart.Saver) -> None:
        """Start from the saved state, if it verifies: only the events after it are read."""
        restored = await warmstart.load(self.log, saver.path, self.cluster, self.metrics)
        if restored is None:
            return
        self.state = restored.state
        self._log_time = restored.log_time
        self.follower.start_seq = restored.position + 1
        saver.loaded(restored.position)

    async def _snapshots(self, saver: warmstart.Saver) -> None:
        """Save the folded state every ``snapshot_seconds`` while it moves on.

        Only once caught up: before that, a last-per-subject bootstrap has not yet delivered
        every subject below the highest sequence it has seen, so no position describes it."""
        while True:
            await asyncio.sleep(self.settings.snapshot_seconds)
            try:
                await saver.save_async(self.state, self._log_time)
            except OSError as exc:
                self._log.warning("snapshot.save_failed", error=repr(exc)[:300])

    async def _tick(self) -> None:
        """Look again at leases and health, but only when the log's clock moved.

        Staleness is judged on the log's clock alone, and every event that moves it is
        reassessed as it arrives; this catches what a batch of events left pending. An idle
        log costs nothing.
        """
        seen: tuple[datetime | None, datetime | None] = (None, None)
        while True:
            await asyncio.sleep(self.settings.tick_seconds)
            clock = (self._log_time, self._resumed_at)
            if clock != seen or self._log_time is None:
                seen = clock
                self._reassess()


def _owning_service(obj: Any) -> ServiceKey | None:
    """The service an object mcsync derived belongs to, by its service-name label."""
    if isinstance(obj, plan.Written):
        return obj.owner if obj.owner[1] else None
    meta = obj.get("metadata") or {}
    name = (meta.get("labels") or {}).get(plan.LABEL_SERVICE_NAME)
    return (str(meta.get("namespace", "")), str(name)) if name else None


def _live(namespace: kube.Obj | None) -> bool:
    return namespace is not None and not namespace.get("metadata", {}).get("deletionTimestamp")


def due_at(
    first: float,
    last: float,
    quiet: float,
    burst_quiet: float,
    cap: float,
    churning: bool = False,
) -> float:
    """When a service whose pending events came from ``first`` to ``last`` is reconciled.

    A pause of ``quiet`` after the last event; in a burst (the events have gone on for longer
    than ``quiet``, or the service was ``churning`` already: its previous events were less than
    ``burst_quiet`` before these), a pause of ``burst_quiet``; never later than ``cap`` after
    the first.
    """
    bursting = churning or last - first > quiet
    return min(last + (burst_quiet if bursting else quiet), first + cap)


def _with_times(obj: kube.Obj, seen: list[kube.Obj] | None, now: datetime) -> kube.Obj:
    """Fill the conditions' transition times from the conditions the cluster shows."""
    status: dict[str, Any] = dict(obj["status"])
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status["conditions"] = plan.with_transition_times(status.get("conditions", []), seen, stamp)
    return {**obj, "status": status}
