"""The publisher: one per cluster, it tells the log what this cluster exports.

It watches ServiceExports, Services and EndpointSlices, turns each key's current state into one
state-carrying event, and appends it only when it differs from what the log already holds for
that key. Every append is a compare-and-set on the subject's last sequence, so a stale replica of
a publisher cannot overwrite a newer one: it gets a conflict, re-reads, and recomputes.

On start it reads its own last event per subject, lists the cluster, appends only the
differences and tombstones for keys that vanished while it was away, then a snapshot-complete
marker for the new epoch. A restart with nothing changed appends nothing but that marker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from engine import jetstream, kube
from engine.core import events as ev
from engine.core import subjects
from engine.core.errors import ConflictError, DecodeError, SyncError
from engine.core.fold import Envelope
from engine.observe import logs
from engine.observe.metrics import Metrics
from publishers import convert
from publishers.membership import MembershipReporter, ReporterSettings

log = logs.get("mcsync.publisher")

ServiceKey = tuple[str, str]


@dataclass
class PublisherSettings:
    """Tunables of a publisher."""

    flush_interval: float = 0.0
    """Extra delay before publishing a changed key, to coalesce bursts (seconds)."""


@dataclass
class _Published:
    """What the log holds on one of our subjects: last sequence and event (None: undecodable)."""

    seq: int
    event: ev.Event | None


@dataclass
class Publisher:
    k8s: kube.Kube
    log: jetstream.EventLog
    cluster: str
    metrics: Metrics = field(default_factory=Metrics)
    settings: PublisherSettings = field(default_factory=PublisherSettings)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    instance: str = "publisher"
    """This process's identity in heartbeats (unique per process; see membership)."""
    reporter_settings: ReporterSettings = field(default_factory=ReporterSettings)

    def __post_init__(self) -> None:
        self.clusterset = self.log.clusterset
        self.published: dict[str, _Published] = {}
        self.slices_of: dict[
            ServiceKey, set[str]
        ] = {}  # service -> source slice names seen/published
        self.dirty: set[str] = set()
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()
        self.appends = 0
        self.epoch = 0
        self.exports = kube.Informer(self.k8s, kube.SERVICE_EXPORTS, self._on_export)
        self.services = kube.Informer(self.k8s, kube.SERVICES, self._on_service)
        self.endpoint_slices = kube.Informer(
            self.k8s,
            kube.ENDPOINT_SLICES,
            self._on_slice,
            label_selector="kubernetes.io/service-name,!multicluster.kubernetes.io/service-name",
        )
        self._log = log.bind(cluster=self.cluster, clusterset=self.clusterset)
        self._flushing = asyncio.Lock()
        self._booting = True
        self.reporter = MembershipReporter(
            self.k8s,
            self.log,
            self.cluster,
            self.instance,
            self.reporter_settings,
            self.metrics,
            self.clock,
            on_leave=self._withdraw_all,
            on_join=self._publish_all,
        )

    # --- subjects of keys ------------------------------------------------------------------

    def _export_subject(self, key: ServiceKey) -> str:
        return subjects.export(self.clusterset, self.cluster, key[0], key[1])

    def _slice_subject(self, key: ServiceKey, name: str) -> str:
        return subjects.endpoint_slice(self.clusterset, self.cluster, key[0], key[1], name)

    # --- change notifications (from informers) ---------------------------------------------

    def _mark_service(self, key: ServiceKey) -> None:
        self.dirty.add(self._export_subject(key))
        for name in self.slices_of.get(key, ()):
            self.dirty.add(self._slice_subject(key, name))
        self._wake.set()

    def _on_export(self, old: kube.Obj | None, new: kube.Obj | None) -> None:
        self._mark_service(kube.key_of(new or old or {}))

    def _on_service(self, old: kube.Obj | None, new: kube.Obj | None) -> None:
        key = kube.key_of(new or old or {})
        if self.exports.get(*key) is not None or self._export_subject(key) in self.published:
            self._mark_service(key)

    def _on_slice(self, old: kube.Obj | None, new: kube.Obj | None) -> None:
        obj = new or old or {}
        if not convert.is_source_slice(obj):
            return
        ns, name = kube.key_of(obj)
        svc = obj["metadata"]["labels"]["kubernetes.io/service-name"]
        self.slices_of.setdefault((ns, svc), set()).add(name)
        self.dirty.add(self._slice_subject((ns, svc), name))
        self._wake.set()

    # --- desired events --------------------------------------------------------------------

    def _desired_export(self, key: ServiceKey) -> ev.ExportUpserted | None:
        if not self.reporter.member:
            return None  # not (or no longer) a member of the clusterset: export nothing
        export = self.exports.get(*key)
        if export is None:
            return None
        return convert.export_event(self.cluster, export, self.services.get(*key))

    def desired(self, subject: str) -> ev.Event | None:
        """The event the log should hold on ``subject`` now; None: nothing (or a tombstone)."""
        parsed = subjects.parse(subject)
        if parsed.kind == "export":
            return self._desired_export((parsed.parts[0], parsed.parts[1]))
        if parsed.kind == "slice":
            ns, svc, name = parsed.parts
            export = self._desired_export((ns, svc))
            eps = self.endpoint_slices.get(ns, name)
            if export is None or export.validity != "Valid" or eps is None:
                return None
            if not convert.is_source_slice(eps):
                return None
            if eps["metadata"]["labels"].get("kubernetes.io/service-name") != svc:
                return None
            return convert.slice_event(self.cluster, eps)
        return None

    def _tombstone(self, subject: str) -> ev.Event | None:
        parsed = subjects.parse(subject)
        if parsed.kind == "export":
            return ev.ExportWithdrawn(
                cluster=self.cluster, namespace=parsed.parts[0], name=parsed.parts[1]
            )
        if parsed.kind == "slice":
            ns, svc, name = parsed.parts
            return ev.SliceRemoved(cluster=self.cluster, namespace=ns, service=svc, name=name)
        return None

    def _next_event(self, subject: str) -> ev.Event | None:
        """What to append on ``subject`` now, or None when the log already says it."""
        want = self.desired(subject)
        have = self.published.get(subject)
        if want is None:
            if have is None or isinstance(have.event, ev.ExportWithdrawn | ev.SliceRemoved):
                return None
            return self._tombstone(subject)
        if have is not None and have.event == want:
            return None
        return want

    # --- appending -------------------------------------------------------------------------

    async def _append(self, subject: str, event: ev.Event) -> None:
        have = self.published.get(subject)
        expected = have.seq if have else 0
        try:
            seq = await self.log.append(jetstream.Append(subject, event, expected))
        except ConflictError as exc:
            self.metrics.conflicts.labels(self.cluster).inc()
            self._log.error(
                "append.conflict",
                subject=subject,
                expected=exc.expected,
                actual=exc.actual,
                hint="another publisher writes this cluster's subjects: two publishers with "
                "the same cluster id, or a stale replica",
            )
            await self._reread(subject)
            self.dirty.add(subject)
            return
        self.published[subject] = _Published(seq, event)
        self.appends += 1
        self.metrics.events_out.labels(self.cluster, ev.tag_of(type(event))).inc()

    async def _reread(self, subject: str) -> None:
        last = await self.log.read_last_per_subject(subject)
        got = last.get(subject)
        if isinstance(got, Envelope):
            self.published[subject] = _Published(got.seq, got.event)
        elif isinstance(got, DecodeError):
            self.published[subject] = _Published(await self.log.last_sequence(subject), None)

    async def _withdraw_all(self) -> None:
        """Before a leave: tombstone every key we published."""
        self._mark_everything()
        await self.flush()

    async def _publish_all(self) -> None:
        """After a (re)join: publish every key."""
        if self._booting:
            return  # the bootstrap publishes everything in one bulk append
        self._mark_everything()
        await self.flush()

    def _mark_everything(self) -> None:
        for subject in list(self.published):
            if subjects.parse(subject).kind in ("export", "slice"):
                self.dirty.add(subject)
        for key in list(self.exports.cache):
            self._mark_service(key)

    async def flush(self) -> int:
        """Publish every dirty key whose desired event differs from the log; return count."""
        async with self._flushing:
            return await self._flush_locked()

    async def _flush_locked(self) -> int:
        count = 0
        while self.dirty:
            batch = sorted(self.dirty)
            self.dirty.clear()
            for i, subject in enumerate(batch):
                event = self._next_event(subject)
                if event is None:
                    continue
                try:
                    await self._append(subject, event)
                except BaseException:
                    # NATS away (or a cancel): what is not appended yet stays dirty, so it
                    # lands once the log is back. Nothing is compared against stale state:
                    # each subject's event is computed again then.
                    self.dirty.update(batch[i:])
                    raise
                count += 1
        return count

    # --- lifecycle -------------------------------------------------------------------------

    async def bootstrap(self) -> None:
        """Read our own last events, list the cluster, append the differences, mark the epoch."""
        mine = subjects.cluster_subjects(self.clusterset, self.cluster)
        for subject, got in (await self.log.read_last_per_subject(mine)).items():
            try:
                subjects.parse(subject)
            except ValueError:
                # Something wrote below our prefix outside the grammar (the stream denies
                # delete and purge, so it stays): not a key of ours; report it and go on.
                self.metrics.refused.labels(self.cluster).inc()
                self._log.warning("subject.foreign", subject=subject, hint="ignored")
                continue
            if isinstance(got, DecodeError):
                self.metrics.refused.labels(self.cluster).inc()
                self._log.warning(
                    "event.unusable", subject=subject, kind=got.kind, error=str(got)[:300]
                )
            if isinstance(got, Envelope):
                self.published[subject] = _Published(got.seq, got.event)
                if isinstance(got.event, ev.SnapshotComplete):
                    self.epoch = got.event.epoch
            else:
                self.published[subject] = _Published(await self.log.last_sequence(subject), None)
            with contextlib.suppress(ValueError):
                parsed = subjects.parse(subject)
                if parsed.kind == "slice":
                    ns, svc, name = parsed.parts
                    self.slices_of.setdefault((ns, svc), set()).add(name)
        await asyncio.gather(
            self.exports.synced.wait(),
            self.services.synced.wait(),
            self.endpoint_slices.synced.wait(),
        )
        # Membership and the first heartbeat go first: subscribers admit a cluster's exports
        # only while it is a live member.
        await self.reporter.bootstrap()
        self._booting = False
        # Every key we know of, from the log and from the cluster.
        self._mark_everything()
        async with self._flushing:
            written = await self._flush_bulk()
        self.epoch += 1
        sync_subject = subjects.sync(self.clusterset, self.cluster)
        await self._append(
            sync_subject, ev.SnapshotComplete(cluster=self.cluster, epoch=self.epoch)
        )
        self._log.info("publisher.bootstrapped", epoch=self.epoch, appended=written)
        self.ready.set()

    async def _flush_bulk(self) -> int:
        """The initial flush: differences go out in one bounded-concurrency bulk append."""
        items: list[jetstream.Append] = []
        for subject in sorted(self.dirty):
            event = self._next_event(subject)
            if event is not None:
                have = self.published.get(subject)
                items.append(jetstream.Append(subject, event, have.seq if have else 0))
        self.dirty.clear()
        if not items:
            return 0
        try:
            seqs = await self.log.append_many(items)
        except ConflictError:
            # Someone else writes our subjects; fall back to one by one with re-reads.
            for a in items:
                self.dirty.add(a.subject)
            return await self._flush_locked()
        for a, seq in zip(items, seqs, strict=True):
            self.published[a.subject] = _Published(seq, a.event)
            self.metrics.events_out.labels(self.cluster, ev.tag_of(type(a.event))).inc()
        self.appends += len(items)
        return len(items)

    async def run(self) -> None:
        """Run until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for informer in (
                self.exports,
                self.services,
                self.endpoint_slices,
                self.reporter.properties,
            ):
                tg.create_task(informer.run())
            await self.bootstrap()
            tg.create_task(self.reporter.run())
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self.settings.flush_interval:
                    await asyncio.sleep(self.settings.flush_interval)
                try:
                    await self.flush()
                except SyncError as exc:
                    self.metrics.errors.labels(self.cluster, "append", "true").inc()
                    self._log.warning("flush.failed", error=str(exc)[:300])
                    await asyncio.sleep(1.0)
                    self._wake.set()
