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
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from engine import eventlog, kube, logs
from engine.metrics import Metrics
from publishers.membership import ReporterSettings
from publishers.publisher import Publisher, PublisherSettings
from subscribers.subscriber import Subscriber, SubscriberSettings

log = logs.get("mcsync.runner")


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
    create_stream: bool = True
    stream: eventlog.StreamSettings = field(default_factory=eventlog.StreamSettings)
    publisher_settings: PublisherSettings = field(default_factory=PublisherSettings)
    reporter_settings: ReporterSettings = field(default_factory=ReporterSettings)
    instance: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )
    subscriber_settings: SubscriberSettings = field(default_factory=SubscriberSettings)
    metrics: Metrics = field(default_factory=Metrics)
    publisher: Publisher | None = None
    subscriber: Subscriber | None = None
    _nc: NATS | None = None
    _k8s: kube.Kube | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def k8s(self) -> kube.Kube:
        assert self._k8s is not None
        return self._k8s

    async def start(self) -> None:
        self._nc = await eventlog.connect(
            self.nats_url,
            name=f"mcsync-{self.cluster}",
            credentials=self.nats_credentials,
            user=self.nats_user,
            password=self.nats_password,
        )
        api = await kube.load_client(self.kubeconfig)
        self._k8s = kube.Kube(api)
        elog = eventlog.EventLog(self._nc, self.clusterset)
        if self.create_stream:
            await elog.ensure(self.stream)
        else:
            await elog.require_stream()
        if self.publish:
            self.publisher = Publisher(
                self._k8s,
                elog,
                self.cluster,
                self.metrics,
                self.publisher_settings,
                instance=self.instance,
                reporter_settings=self.reporter_settings,
            )
            self._tasks.append(asyncio.create_task(self._guard("publisher", self.publisher.run())))
        if self.subscribe:
            self.subscriber = Subscriber(
                self._k8s, elog, self.cluster, self.metrics, self.subscriber_settings
            )
            self._tasks.append(
                asyncio.create_task(self._guard("subscriber", self.subscriber.run()))
            )

    async def _guard(self, what: str, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception(f"{what}.crashed", cluster=self.cluster)
            raise

    def alive(self) -> bool:
        """True while every started task runs."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def is_ready(self) -> bool:
        pub = self.publisher is None or self.publisher.ready.is_set()
        sub = self.subscriber is None or self.subscriber.ready.is_set()
        return self.alive() and pub and sub

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
            await eventlog.close(self._nc)
            self._nc = None
        if self._k8s is not None:
            await self._k8s.api.close()
            self._k8s = None
