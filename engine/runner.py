"""Composition root: run a cluster's publisher and subscriber in this process.

Used by the CLI (``mcsync publisher``, ``mcsync subscriber``, ``mcsync local up``, ``mcsync
demo``) and by the tests. It wires one NATS connection, one Kubernetes client, the shells and
their health server; it holds no sync logic of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.errors import NoServersError

from engine import jetstream, kube
from engine.core.errors import ConfigError, TransientError
from engine.observe import logs
from engine.observe.metrics import Metrics
from publishers.membership import ReporterSettings
from publishers.publisher import Publisher, PublisherSettings
from subscribers.subscriber import Subscriber, SubscriberSettings

log = logs.get("mcsync.runner")


def default_instance() -> str:
    """This publisher's instance id: ``MCSYNC_INSTANCE`` (the pod's name in the manifests, so a
    restarted container is the same instance and resumes at once), else a per-process id."""
    return os.environ.get("MCSYNC_INSTANCE") or (
        f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )


def config_error(exc: BaseException) -> ConfigError | None:
    """The configuration error ``exc`` is or carries (inside exception groups), if any."""
    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = config_error(inner)
            if found is not None:
                return found
    return None


@dataclass
class Member:
    """One cluster's mcsync processes (publisher and/or subscriber), run as tasks."""

    cluster: str
    clusterset: str
    kubeconfig: Path | str | None
    nats_url: str
    publish: bool = True
    subscribe: bool = True
    nats_credentials: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    nats_tls: jetstream.Tls | None = None
    create_stream: bool = True
    log_layout: jetstream.Layout = "hub"
    """How this cluster reaches the log (:mod:`engine.jetstream.layout`)."""
    stream: jetstream.StreamSettings = field(default_factory=jetstream.StreamSettings)
    publisher_settings: PublisherSettings = field(default_factory=PublisherSettings)
    reporter_settings: ReporterSettings = field(default_factory=ReporterSettings)
    instance: str = field(default_factory=default_instance)
    subscriber_settings: SubscriberSettings = field(default_factory=SubscriberSettings)
    metrics: Metrics = field(default_factory=Metrics)
    publisher: Publisher | None = None
    subscriber: Subscriber | None = None
    _nc: NATS | None = None
    _k8s: kube.Kube | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _log: jetstream.EventLog | None = None
    _stopping: bool = False
    problems: dict[str, str] = field(default_factory=dict)
    """The last failure of each component that is being started again."""

    @property
    def route(self) -> jetstream.Route:
        """Where this cluster reads the log and where its appends go."""
        return jetstream.Route(self.clusterset, self.cluster, self.log_layout)

    @property
    def k8s(self) -> kube.Kube:
        assert self._k8s is not None
        return self._k8s

    async def start(self) -> None:
        self._nc = await self._connect()
        api = await kube.load_client(self.kubeconfig)
        self._k8s = kube.Kube(api)
        elog = self._log = jetstream.EventLog(self._nc, self.clusterset, route=self.route)
        await elog.prepare(self.stream, create_log=self.create_stream)
        # The first components exist when start() returns (callers look at them at once).
        if self.publish:
            pub = self._new_publisher()
            self._tasks.append(
                asyncio.create_task(self._guard("publisher", self._new_publisher, pub))
            )
        if self.subscribe:
            sub = self._new_subscriber()
            self._tasks.append(
                asyncio.create_task(self._guard("subscriber", self._new_subscriber, sub))
            )

    async def _connect(self) -> NATS:
        """Connect to NATS, waiting as long as it takes: a member started while NATS is away
        waits for it (``/readyz`` says so) instead of exiting."""
        backoff = 0.5
        while True:
            try:
                return await jetstream.connect(
                    self.nats_url,
                    name=f"mcsync-{self.cluster}",
                    credentials=self.nats_credentials,
                    user=self.nats_user,
                    password=self.nats_password,
                    tls=self.nats_tls,
                    inbox_prefix=self.route.inbox_prefix,
                )
            except Exception as exc:
                if not (jetstream.is_transient(exc) or isinstance(exc, OSError | NoServersError)):
                    raise
                self.problems["nats"] = f"NATS is unreachable at start: {exc!r}"[:200]
                log.warning("nats.unreachable", cluster=self.cluster, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _new_publisher(self) -> Publisher:
        assert self._k8s is not None and self._log is not None
        self.publisher = Publisher(
            self._k8s,
            self._log,
            self.cluster,
            self.metrics,
            self.publisher_settings,
            instance=self.instance,
            reporter_settings=self.reporter_settings,
        )
        return self.publisher

    def _new_subscriber(self) -> Subscriber:
        assert self._k8s is not None and self._log is not None
        self.subscriber = Subscriber(
            self._k8s, self._log, self.cluster, self.metrics, self.subscriber_settings
        )
        return self.subscriber

    async def _guard(
        self,
        what: str,
        new: Callable[[], Publisher | Subscriber],
        first: Publisher | Subscriber,
    ) -> None:
        """Run a component; after any failure but a configuration error, run a fresh one.

        A process never exits on a transient NATS or Kubernetes failure: the component is
        started again with backoff (its bootstrap reconciles whatever changed meanwhile), and
        ``/readyz`` says why it is not ready until then.
        """
        backoff = 1.0
        component = first
        while True:
            try:
                await component.run()
                return
            except asyncio.CancelledError:
                raise
            except ConfigError:
                log.exception(f"{what}.crashed", cluster=self.cluster)
                raise
            except Exception as exc:
                config = config_error(exc)
                if config is not None:
                    # Raised inside a task group, it comes wrapped: still the end of the process.
                    log.error(f"{what}.crashed", cluster=self.cluster, error=str(config))
                    raise config from exc
                task = asyncio.current_task()
                if self._stopping or (task is not None and task.cancelling()):
                    raise  # failing on the way out (a cancel turned into an error): just stop
                transient = isinstance(exc, TransientError) or jetstream.is_transient(exc)
                self.metrics.errors.labels(self.cluster, what, str(transient).lower()).inc()
                self.problems[what] = f"{what} failed, restarting: {str(exc)[:200]}"
                log.error(
                    f"{what}.failed",
                    cluster=self.cluster,
                    error=repr(exc)[:500],
                    restarting_in=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                component = new()

    def alive(self) -> bool:
        """True while every started task runs."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def is_ready(self) -> bool:
        return self.not_ready_because() is None

    def not_ready_because(self) -> str | None:
        """Why this member is not ready (None: it is), as ``/readyz`` reports it."""
        if self._nc is None:
            return self.problems.get("nats", "starting: connecting to NATS")
        if not self.alive():
            return "a component stopped"
        reasons = []
        if self._nc is not None and not self._nc.is_connected:
            reasons.append("NATS is unreachable; reconnecting")
        for what, component in (("publisher", self.publisher), ("subscriber", self.subscriber)):
            if component is None:
                continue
            if component.ready.is_set():
                self.problems.pop(what, None)
            elif what in self.problems:
                reasons.append(self.problems[what])
            else:
                reasons.append(f"{what} is starting")
        return "; ".join(reasons) or None

    async def wait_ready(self, timeout: float = 60.0) -> None:
        waits = []
        if self.publisher is not None:
            waits.append(self.publisher.ready.wait())
        if self.subscriber is not None:
            waits.append(self.subscriber.ready.wait())
        async with asyncio.timeout(timeout):
            for t in self._tasks:
                if t.done():
                    t.result()
            await asyncio.gather(*waits)

    async def wait(self) -> None:
        """Return when a component stops; re-raise its error if it failed."""
        if not self._tasks:
            return
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()

    async def stop(self) -> None:
        self._stopping = True
        # Cancel until every task has stopped, bounded: a shutdown never hangs.
        pending = set(self._tasks)
        for _ in range(20):
            if not pending:
                break
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        if pending:
            log.error("member.stop_incomplete", cluster=self.cluster, tasks=len(pending))
        for t in self._tasks:
            if t.done() and not t.cancelled():
                with contextlib.suppress(BaseException):
                    t.exception()
        self._tasks.clear()
        if self._nc is not None:
            await jetstream.close(self._nc)
            self._nc = None
        if self._k8s is not None:
            await self._k8s.api.close()
            self._k8s = None
