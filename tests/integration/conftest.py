"""Fixtures for scenarios: mcsync members (publisher + subscriber) on the shared clusterset."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from engine import kube, runner
from tests.conftest import ClusterSet

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], timeout: float = 20.0, interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns a truthy value (returned) or raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")
        await asyncio.sleep(interval)


async def holds(
    probe: Callable[[], Awaitable[Any]], duration: float, interval: float = 0.1
) -> None:
    """Assert ``probe`` stays truthy for ``duration`` seconds."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        value = await probe()
        assert value, f"condition stopped holding: {value!r}"
        await asyncio.sleep(interval)


class Members:
    """The running members of one test's clusterset, by cluster name."""

    def __init__(self, cs: ClusterSet, clusterset_name: str) -> None:
        self.cs = cs
        self.clusterset_name = clusterset_name
        self.members: dict[str, runner.Member] = {}

    def new(self, name: str, **kw: Any) -> runner.Member:
        return runner.Member(
            cluster=name,
            clusterset=self.clusterset_name,
            kubeconfig=self.cs[name].kubeconfig,
            nats_url=self.cs.nats.url,
            **kw,
        )

    async def start(self, name: str, **kw: Any) -> runner.Member:
        m = self.new(name, **kw)
        await m.start()
        await m.wait_ready()
        self.members[name] = m
        return m

    async def stop(self, name: str) -> None:
        await self.members.pop(name).stop()

    async def stop_all(self) -> None:
        for name in list(self.members):
            await self.stop(name)


@pytest.fixture
async def members(clusterset: ClusterSet, clusterset_name: str) -> AsyncIterator[Members]:
    m = Members(clusterset, clusterset_name)
    try:
        yield m
    finally:
        await m.stop_all()


@pytest.fixture
async def mcsync(members: Members) -> Members:
    """A publisher and a subscriber in each of the three clusters, ready."""
    await asyncio.gather(*(members.start(c.name) for c in members.cs.clusters))
    return members


def service(
    ns: str,
    name: str = "hello",
    ports: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> kube.Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"dummy-svc": "true"}},
        "spec": {
            "ports": ports
            or [
                {"name": "tcp", "port": 42, "protocol": "TCP"},
                {"name": "udp", "port": 42, "protocol": "UDP"},
            ],
            **spec,
        },
    }


def service_export(ns: str, name: str = "hello", **spec: Any) -> kube.Obj:
    return {
        "apiVersion": kube.SERVICE_EXPORTS.api_version,
        "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": ns, "labels": {"dummy-svcexport": "true"}},
        "spec": spec,
    }


def endpoint_slice(
    ns: str,
    svc: str,
    name: str,
    addresses: list[str],
    port: int = 8080,
    ready: bool = True,
    **extra: Any,
) -> kube.Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [a], "conditions": {"ready": ready}, **extra} for a in addresses
        ],
        "ports": [
            {"name": "tcp", "port": port, "protocol": "TCP"},
            {"name": "udp", "port": port, "protocol": "UDP"},
        ],
    }


def condition(obj: kube.Obj | None, ctype: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return None


def now() -> datetime:
    return datetime.now(UTC)
