"""The test substrate is real: kube-apiservers that allocate, validate and isolate; a JetStream
server that stores and returns messages."""

from __future__ import annotations

import ipaddress

import nats
import pytest

from engine import kube
from engine.local import controlplane
from tests.conftest import ClusterSet

pytestmark = pytest.mark.integration


async def test_a_service_reads_back_with_an_allocated_cluster_ip(
    clusterset: ClusterSet, namespace: str
) -> None:
    k = clusterset["cluster-1"].kube
    await k.create(
        kube.SERVICES,
        {
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        },
    )
    svc = await k.get(kube.SERVICES, namespace, "web")
    assert svc is not None
    ip = ipaddress.ip_address(svc["spec"]["clusterIP"])
    assert ip in ipaddress.ip_network("10.96.0.0/16")


async def test_three_apiservers_serve_at_once_and_are_isolated(
    clusterset: ClusterSet, namespace: str
) -> None:
    one, two, three = clusterset.clusters
    await one.kube.create(
        kube.SERVICES,
        {
            "metadata": {"name": "only-in-one", "namespace": namespace},
            "spec": {"ports": [{"port": 1}]},
        },
    )
    assert await one.kube.get(kube.SERVICES, namespace, "only-in-one") is not None
    assert await two.kube.get(kube.SERVICES, namespace, "only-in-one") is None
    assert await three.kube.get(kube.SERVICES, namespace, "only-in-one") is None
    ports = {c.cluster.port for c in clusterset.clusters}
    assert len(ports) == 3


async def test_a_jetstream_stream_accepts_and_returns_messages(
    clusterset: ClusterSet, clusterset_name: str
) -> None:
    nc = await nats.connect(clusterset.nats.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=clusterset_name.upper(), subjects=[f"{clusterset_name}.>"])
        ack = await js.publish(f"{clusterset_name}.a", b"hello")
        msg = await js.get_msg(clusterset_name.upper(), ack.seq)
        assert msg.data == b"hello"
        await js.delete_stream(clusterset_name.upper())
    finally:
        await nc.close()


async def test_a_killed_apiserver_is_noticed() -> None:
    async with controlplane.LocalClusters(["lonely"]) as lc:
        c = lc["lonely"]
        api = await kube.load_client(c.kubeconfig_path)
        try:
            k = kube.Kube(api)
            assert await k.get(kube.NAMESPACES, None, "default") is not None
            c.kill()
            assert not c.alive()
            with pytest.raises(kube.KubeTransientError):
                await k.get(kube.NAMESPACES, None, "default")
            await lc.restart("lonely")
            assert await k.get(kube.NAMESPACES, None, "default") is not None
        finally:
            await api.close()
