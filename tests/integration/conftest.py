"""Fixtures for scenarios: mcsync members (publisher + subscriber) on the shared clusterset."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

from engine import identity, jetstream, kube, runner
from engine.core import events as ev
from engine.local.natsserver import NatsServer
from tests.conftest import ClusterSet
from tests.integration import localnodes

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout: float = 20.0, interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns a truthy value (returned) or raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")
        await asyncio.sleep(interval)


@pytest.fixture(scope="module")
async def node_clusters(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[localnodes.NodeClusters]:
    """Two clusters with a real node each, for one module (tests/integration/localnodes.py);
    with mcsync's image on the nodes when the module sets ``MCSYNC_IMAGE = True``."""
    mcsync_image = bool(getattr(request.module, "MCSYNC_IMAGE", False))
    async with localnodes.started(tmp_path_factory.mktemp("nodes"), mcsync_image) as nc:
        yield nc


@pytest.fixture
async def log(nats_server: NatsServer, clusterset_name: str) -> AsyncIterator[jetstream.EventLog]:
    """A log of the test's own clusterset on the shared nats-server."""
    nc = await jetstream.connect(nats_server.url)
    lg = jetstream.EventLog(nc, clusterset_name)
    await lg.ensure()
    yield lg
    await nc.drain()


def export_event(cluster: str, name: str = "web", port: int = 80) -> ev.ExportUpserted:
    """A small ExportUpserted of ``ns/<name>`` from ``cluster``."""
    return ev.ExportUpserted(
        cluster=cluster,
        namespace="ns",
        name=name,
        uid=f"uid-{cluster}-{name}",
        created=datetime(2026, 1, 1, tzinfo=UTC),
        ports=(ev.Port(port=port, name="http"),),
    )


class Restartable(NamedTuple):
    server: NatsServer
    log: jetstream.EventLog


@pytest.fixture
async def restartable(clusterset_name: str, tmp_path: Path) -> AsyncIterator[Restartable]:
    """A nats-server of the test's own whose store survives ``restart()``, and a log on it whose
    appends retry for up to a minute."""
    async with NatsServer(store_dir=tmp_path / "nats") as server:
        nc = await jetstream.connect(server.url)
        try:
            log = jetstream.EventLog(nc, clusterset_name, retry_for=60)
            await log.ensure()
            yield Restartable(server, log)
        finally:
            await nc.close()


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

    async def start_as(self, key: str, name: str, **kw: Any) -> runner.Member:
        """Start a member for cluster ``name`` kept under ``key``, so one cluster can run its
        publisher and subscriber as separate members (``publish=False`` / ``subscribe=False``)
        or a second replica; ``stop(key)`` stops it."""
        m = self.new(name, **kw)
        await m.start()
        try:
            await m.wait_ready()
        except BaseException:
            await m.stop()
            raise
        self.members[key] = m
        return m

    async def stop(self, name: str) -> None:
        await self.members.pop(name).stop()

    async def stop_all(self) -> None:
        for name in list(self.members):
            await self.stop(name)


@pytest.fixture
async def members(clusterset: ClusterSet, clusterset_name: str) -> AsyncIterator[Members]:
    # Each test is its own clusterset (a fresh stream): make every cluster a member of it.
    for c in clusterset.clusters:
        await identity.write(c.kube, c.name, clusterset_name)
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


# --- helpers of the conformance suite and the MCS scenarios ---------------------------------


def hello_service(ns: str, ports: list[dict[str, Any]] | None = None, **spec: Any) -> kube.Obj:
    """The conformance suite's Service ``hello``: ports tcp/42/TCP and udp/42/UDP, ClientIP
    session affinity (10 s), PreferDualStack, PreferClose, labels and annotations ``dummy-svc``.
    ``spec`` overrides or adds fields; a value of None removes the field."""
    body: dict[str, Any] = {
        "selector": {"app": "hello"},
        "ports": ports
        or [
            {"name": "tcp", "port": 42, "protocol": "TCP"},
            {"name": "udp", "port": 42, "protocol": "UDP"},
        ],
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10}},
        "ipFamilyPolicy": "PreferDualStack",
        "trafficDistribution": "PreferClose",
    }
    body.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "hello",
            "namespace": ns,
            "labels": {"dummy-svc": "true"},
            "annotations": {"dummy-svc": "true"},
        },
        "spec": {k: v for k, v in body.items() if v is not None},
    }


def hello_export(ns: str, **spec: Any) -> kube.Obj:
    """The conformance suite's ServiceExport ``hello``, labels and annotations
    ``dummy-svcexport``; ``spec`` is e.g. ``exportedLabels``/``exportedAnnotations``."""
    obj = service_export(ns, **spec)
    obj["metadata"]["annotations"] = {"dummy-svcexport": "true"}
    return obj


async def create_namespace(cs: ClusterSet, name: str, clusters: list[str]) -> None:
    """Create namespace ``name`` in the given clusters only."""
    for c in clusters:
        await cs[c].kube.create(kube.NAMESPACES, {"metadata": {"name": name}})


async def get_import(cs: ClusterSet, cluster: str, ns: str, name: str = "hello") -> kube.Obj | None:
    return await cs[cluster].kube.get(kube.SERVICE_IMPORTS, ns, name)


async def imports_in(
    cs: ClusterSet, ns: str, clusters: list[str] | None = None, name: str = "hello"
) -> dict[str, kube.Obj] | None:
    """The import in each cluster (all by default), or None while one of them lacks it."""
    got: dict[str, kube.Obj] = {}
    for c in clusters or [h.name for h in cs.clusters]:
        imp = await get_import(cs, c, ns, name)
        if imp is None:
            return None
        got[c] = imp
    return got


async def no_import_in(
    cs: ClusterSet, ns: str, clusters: list[str] | None = None, name: str = "hello"
) -> bool:
    for c in clusters or [h.name for h in cs.clusters]:
        if await get_import(cs, c, ns, name) is not None:
            return False
    return True


async def export_condition(
    cs: ClusterSet, cluster: str, ns: str, ctype: str, name: str = "hello"
) -> dict[str, Any] | None:
    """A condition of the ServiceExport ``ns/name`` in ``cluster``."""
    return condition(await cs[cluster].kube.get(kube.SERVICE_EXPORTS, ns, name), ctype)


async def mcs_slices(cs: ClusterSet, cluster: str, ns: str, name: str = "hello") -> list[kube.Obj]:
    """The MCS EndpointSlices of service ``name`` in ``cluster``."""
    items, _ = await cs[cluster].kube.list(
        kube.ENDPOINT_SLICES, ns, f"multicluster.kubernetes.io/service-name={name}"
    )
    return items


def api_writes(member: runner.Member, kind: str | None = None) -> float:
    """Kubernetes API writes a member counted in its metrics (of one object kind, or all)."""
    total = 0.0
    for metric in member.metrics.writes.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            if sample.labels.get("cluster") != member.cluster:
                continue
            if kind is None or sample.labels.get("kind") == kind:
                total += sample.value
    return total


@pytest.fixture
async def clean_namespaces(
    request: pytest.FixtureRequest, clusterset: ClusterSet
) -> AsyncIterator[list[str]]:
    """Delete what the test left in its namespaces when it ends (after its members stopped).

    The clusters are shared by the whole session and namespaces never finish deleting, so what
    a test exports would otherwise be published again by every later test's publishers (a
    fresh clusterset each) and imported everywhere, and the imports, derived Services and
    slices it got would be pruned by the next test's subscribers: writes and load that later
    tests would count as theirs. The test's ``namespace`` is cleaned; a test that makes other
    namespaces appends them to the yielded list.
    """
    extra: list[str] = []
    yield extra
    namespaces = [*extra]
    if isinstance(ns := request.node.funcargs.get("namespace"), str):
        namespaces.append(ns)
    for ns in namespaces:
        for h in clusterset.clusters:
            for res in (
                kube.SERVICE_EXPORTS,
                kube.SERVICE_IMPORTS,
                kube.SERVICES,
                kube.ENDPOINT_SLICES,
            ):
                items, _ = await h.kube.list(res, ns)
                for item in items:
                    await h.kube.delete(res, ns, item["metadata"]["name"])
