"""Membership and health: the cluster's own entries in the log.

The reporter turns the cluster's ClusterProperties (all of them, name for name) and its API
server version into joined / updated / left events on ``mcsync.<set>.<cluster>.cluster``, and
appends a heartbeat every few seconds carrying the control plane's readiness.

Heartbeats must not dominate history or storage: each carries a per-message TTL
(``Nats-TTL``, three leases) so JetStream drops it once it no longer matters, and at most a
handful per cluster exist at any time. A heartbeat whose health differs from the previous one
is a *transition* and is appended without a TTL, so the audit trail keeps every change.

A cluster id belongs to one live publisher: before it appends anything, a publisher checks the
last heartbeat of its cluster; if another instance sent it and has not said it is stopping, it
waits until that instance has been silent for a whole heartbeat lease on its own monotonic
clock. While running, a heartbeat it did not write on its subject means a second publisher
claims the id: the instance with the higher id stops with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from engine import identity, jetstream, kube
from engine.core import events as ev
from engine.core import evolution, inventory, subjects
from engine.core.errors import ConfigError, DecodeError, TransientError
from engine.core.fold import Envelope
from engine.observe import logs
from engine.observe.metrics import Metrics

log = logs.get("mcsync.membership")


@dataclass
class ReporterSettings:
    """Tunables of membership and heartbeats."""

    heartbeat_interval: float = 10.0
    """Seconds between heartbeats."""
    lease: float = 30.0
    """The heartbeat lease subscribers apply; used here to judge a previous instance dead."""
    api_server_url: str | None = None
    """Advertised in ClusterProfile ``accessProviders`` (with the CA below) when set."""
    api_server_ca_data: str | None = None
    """Base64 PEM of the API server's CA."""
    access_provider_name: str = "mcsync"


@dataclass
class MembershipReporter:
    k8s: kube.Kube
    log: jetstream.EventLog
    cluster: str
    instance: str
    settings: ReporterSettings = field(default_factory=ReporterSettings)
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    on_leave: Callable[[], Awaitable[None]] | None = None
    """Awaited before the leave is appended: the publisher tombstones its keys there."""
    on_join: Callable[[], Awaitable[None]] | None = None
    """Awaited after the join is appended: the publisher publishes its keys there."""

    def __post_init__(self) -> None:
        url = self.settings.api_server_url
        if url and not inventory.valid_server(url):
            # Refused at start, not left for every profile to drop (see inventory.py).
            raise ConfigError(
                f"--api-server-url {url[:200]!r} is not an http(s) URL with a host "
                "(e.g. https://east.example.com:6443): ClusterProfiles could not advertise it"
            )
        self.clusterset = self.log.clusterset
        self.properties = kube.Informer(self.k8s, kube.CLUSTER_PROPERTIES, self._on_property)
        self.published: ev.Event | None = None
        self.published_seq = 0
        self.member = False
        self.version = ""
        self.health: ev.Health | None = None
        self.heartbeat_seq = 0
        self.heartbeats = 0
        self._changed = asyncio.Event()
        self._log = log.bind(cluster=self.cluster, clusterset=self.clusterset)

    @property
    def cluster_subject(self) -> str:
        return subjects.cluster(self.clusterset, self.cluster)

    @property
    def heartbeat_subject(self) -> str:
        return subjects.heartbeat(self.clusterset, self.cluster)

    def _on_property(self, old: kube.Obj | None, new: kube.Obj | None) -> None:
        self._changed.set()

    def _props(self) -> dict[str, str]:
        return {
            name: str(obj.get("spec", {}).get("value", ""))
            for (_, name), obj in sorted(self.properties.cache.items())
        }

    def desired(self) -> ev.Event:
        """Joined/updated while ``clusterset.k8s.io`` names our clusterset, else left."""
        props = self._props()
        cluster_id = props.get(identity.CLUSTER_ID_PROPERTY)
        if cluster_id is not None and cluster_id != self.cluster:
            raise ConfigError(
                f"the cluster id changed from {self.cluster!r} to {cluster_id!r} while a member; "
                "KEP-2149 forbids it: remove clusterset.k8s.io first (leave), then rejoin"
            )
        if props.get(identity.CLUSTERSET_PROPERTY) != self.clusterset:
            return ev.ClusterLeft(cluster=self.cluster, clusterset=self.clusterset)
        access: tuple[ev.AccessProvider, ...] = ()
        if self.settings.api_server_url:
            access = (
                ev.AccessProvider(
                    name=self.settings.access_provider_name,
                    server=self.settings.api_server_url,
                    certificate_authority_data=self.settings.api_server_ca_data,
                ),
            )
        kind = (
            ev.ClusterUpdated if isinstance(self.published, ev.ClusterJoined) else ev.ClusterJoined
        )
        return kind(
            cluster=self.cluster,
            clusterset=self.clusterset,
            properties=props,
            kubernetes_version=self.version,
            access_providers=access,
            observed=self.clock(),
            reads=evolution.READS,
        )

    def _same(self, a: ev.Event | None, b: ev.Event) -> bool:
        """Equal apart from the observation time (a re-read of unchanged properties)."""
        if isinstance(a, ev.ClusterJoined) and isinstance(b, ev.ClusterJoined):
            keys = ("clusterset", "properties", "kubernetes_version", "access_providers", "reads")
            return all(getattr(a, k) == getattr(b, k) for k in keys)
        return type(a) is type(b) and a == b

    async def sync_membership(self) -> bool:
        """Append the cluster event if it changed; return whether we are a member now."""
        want = self.desired()
        if self.published is not None and self._same(self.published, want):
            return self.member
        leaving = isinstance(want, ev.ClusterLeft)
        if leaving and not isinstance(self.published, ev.ClusterJoined):
            self.member = False
            return False  # never joined (or already left): nothing to say
        # What the log says decides whether this is a join, so a retry after a failed append
        # (NATS away) joins or leaves exactly as the first try would have.
        was = isinstance(self.published, ev.ClusterJoined)
        if leaving:
            self.member = False  # the publisher's tombstones need it first
            if self.on_leave is not None:
                await self.on_leave()
        self.published_seq = await self.log.append(
            jetstream.Append(self.cluster_subject, want, self.published_seq)
        )
        self.published = want
        self.member = not leaving
        self._log.info("membership", change=ev.tag_of(type(want)))
        if self.member and not was and self.on_join is not None:
            await self.on_join()
        return self.member

    async def _probe(self) -> tuple[ev.Health, str, str]:
        status, body = await self.k8s.probe("/readyz")
        if status == 200:
            return "Healthy", "APIServerReady", "GET /readyz answered ok"
        if status == 0:
            return "Unhealthy", "APIServerUnreachable", body[:200]
        return "Unhealthy", "APIServerNotReady", f"GET /readyz answered {status}: {body[:200]}"

    async def _read_version(self) -> None:
        status, body = await self.k8s.probe("/version")
        if status == 200:
            with contextlib.suppress(msgspec.DecodeError, AttributeError):
                self.version = str(msgspec.json.decode(body).get("gitVersion", ""))

    async def heartbeat(self, stopping: bool = False) -> None:
        """Append one heartbeat; check nobody else heartbeats for our cluster id."""
        last = await self.log.last_sequence(self.heartbeat_subject)
        if self.heartbeat_seq and last != self.heartbeat_seq and not stopping:
            await self._foreign_heartbeat()
        health, reason, message = await self._probe()
        transition = self.health is not None and health != self.health
        event = ev.Heartbeat(
            cluster=self.cluster,
            health=health,
            reason=reason,
            message=message,
            interval_seconds=self.settings.heartbeat_interval,
            instance=self.instance,
            stopping=stopping,
        )
        ttl = None if transition or self.health is None else int(self.settings.lease * 3)
        self.heartbeat_seq = await self.log.append(
            jetstream.Append(self.heartbeat_subject, event, None, ttl_seconds=ttl)
        )
        self.heartbeats += 1
        if transition:
            self._log.warning("health.transition", health=health, reason=reason)
        self.health = health

    async def _last_heartbeat(self) -> Envelope | None:
        """The last heartbeat on our subject; a forged or unusable one counts as none."""
        got = (await self.log.read_last_per_subject(self.heartbeat_subject)).get(
            self.heartbeat_subject
        )
        if isinstance(got, DecodeError):
            self.metrics.refused.labels(self.cluster).inc()
            self._log.warning("heartbeat.unusable", kind=got.kind, error=str(got)[:300])
            return None
        if got is None or not isinstance(got.event, ev.Heartbeat):
            return None
        return got

    async def _foreign_heartbeat(self) -> None:
        got = await self._last_heartbeat()
        if got is None:
            return
        assert isinstance(got.event, ev.Heartbeat)
        other = got.event.instance
        if other == self.instance:
            return
        self.metrics.duplicate_ids.labels(self.cluster).set(1)
        self._log.error("cluster_id.duplicate", other_instance=other, instance=self.instance)
        if self.instance > other:
            raise ConfigError(
                f"another publisher ({other}) claims cluster id {self.cluster!r}; this one "
                f"({self.instance}) stops. Give each cluster a unique cluster.clusterset.k8s.io."
            )

    async def wait_for_id(self) -> None:
        """Return once no other live publisher holds our cluster id."""
        lease = self.settings.lease
        while True:
            got = await self._last_heartbeat()
            if got is None:
                return
            assert isinstance(got.event, ev.Heartbeat)
            hb = got.event
            if hb.instance == self.instance or hb.stopping:
                return
            # Judge liveness on our own clock: wait for a lease without a new heartbeat.
            seq = got.seq
            deadline = time.monotonic() + lease
            self._log.warning(
                "cluster_id.in_use",
                other_instance=hb.instance,
                waiting_seconds=lease,
                hint="another publisher heartbeats for this cluster id; waiting for it to stop",
            )
            while time.monotonic() < deadline:
                await asyncio.sleep(min(1.0, lease / 10))
                if await self.log.last_sequence(self.heartbeat_subject) != seq:
                    break
            else:
                return

    async def bootstrap(self) -> None:
        await self.properties.synced.wait()
        await self._read_version()
        await self.wait_for_id()
        got = (await self.log.read_last_per_subject(self.cluster_subject)).get(self.cluster_subject)
        if isinstance(got, Envelope):
            self.published, self.published_seq = got.event, got.seq
            self.member = isinstance(got.event, ev.ClusterJoined)
        elif got is not None:
            self.published_seq = await self.log.last_sequence(self.cluster_subject)
        await self.heartbeat()
        await self.sync_membership()

    async def run(self) -> None:
        """Heartbeat and follow property changes until cancelled (after :meth:`bootstrap`)."""
        interval = self.settings.heartbeat_interval
        next_beat = time.monotonic() + interval
        beats = 0
        try:
            while True:
                timeout = max(0.0, next_beat - time.monotonic())
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation, and this loop must stop when its task is cancelled.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._changed.wait()
                try:
                    if self._changed.is_set():
                        self._changed.clear()
                        await self.sync_membership()
                    if time.monotonic() >= next_beat:
                        beats += 1
                        if beats % 30 == 0:
                            await self._read_version()
                            await self.sync_membership()
                        next_beat = time.monotonic() + interval
                        await self.heartbeat()
                except TransientError as exc:
                    # NATS or the API is away: try again at the next beat, never give up.
                    self.metrics.errors.labels(self.cluster, "heartbeat", "true").inc()
                    self._log.warning("heartbeat.failed", error=str(exc)[:300])
                    self._changed.set()  # sync membership again once NATS is back
                    await asyncio.sleep(min(interval, 2.0))
        except asyncio.CancelledError:
            # Say goodbye so a replacement need not wait for the lease.
            goodbye = asyncio.ensure_future(self.heartbeat(stopping=True))
            # Best effort on the way out; its failure (NATS away) is read here, never left
            # unretrieved.
            goodbye.add_done_callback(lambda t: t.cancelled() or t.exception())
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await asyncio.shield(goodbye)
            raise
