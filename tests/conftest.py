"""Shared fixtures: a real clusterset (3 kube-apiservers on one etcd) and a real nats-server.

Both start once per test session; tests are isolated by a fresh namespace (in every cluster) and
a fresh clusterset name (so a fresh stream and subjects) each.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from kubernetes_asyncio import client

from engine import kube
from engine.local import controlplane
from engine.local.natsserver import NatsServer

CLUSTERS = ["cluster-1", "cluster-2", "cluster-3"]


@dataclass
class ClusterHandle:
    """One simulated cluster as a test sees it."""

    name: str
    api: client.ApiClient
    kube: kube.Kube
    cluster: controlplane.Cluster

    @property
    def kubeconfig(self) -> str:
        return str(self.cluster.kubeconfig_path)


@dataclass
class ClusterSet:
    clusters: list[ClusterHandle]
    local: controlplane.LocalClusters
    nats: NatsServer
    by_name: dict[str, ClusterHandle] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ClusterHandle:
        return self.by_name[name]


@pytest.fixture(scope="session")
async def nats_server() -> AsyncIterator[NatsServer]:
    async with NatsServer() as server:
        yield server


@pytest.fixture(scope="session")
async def local_clusters(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[controlplane.LocalClusters]:
    kdir = tmp_path_factory.mktemp("kubeconfigs")
    async with controlplane.LocalClusters(CLUSTERS, kubeconfig_dir=kdir) as lc:
        yield lc


@pytest.fixture(scope="session")
async def clusterset(
    local_clusters: controlplane.LocalClusters, nats_server: NatsServer
) -> AsyncIterator[ClusterSet]:
    handles: list[ClusterHandle] = []
    try:
        for c in local_clusters.clusters:
            api = await kube.load_client(c.kubeconfig_path)
            k = kube.Kube(api, field_manager="mcsync-tests")
            handles.append(ClusterHandle(c.name, api, k, c))
            await kube.install_crds(k)
            await k.create(kube.NAMESPACES, {"metadata": {"name": "mcsync-system"}})
        yield ClusterSet(handles, local_clusters, nats_server, {h.name: h for h in handles})
    finally:
        for h in handles:
            await h.api.close()


@pytest.fixture
async def namespace(clusterset: ClusterSet) -> str:
    """A fresh namespace, present in every cluster."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    for h in clusterset.clusters:
        await h.kube.create(kube.NAMESPACES, {"metadata": {"name": name}})
    return name


@pytest.fixture
def clusterset_name() -> str:
    """A fresh clusterset name: a stream and subjects no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"
