"""Local nodes are real: pods run on a kubelet in each cluster, reach each other's pods, reach
Services through kube-proxy, and reach a Service exported from another cluster by its
``clusterset.local`` name, with mcsync's publishers and subscribers running in this process.

Two clusters, each with one node in a network namespace of its own (containerd, runc, the
kubelet, kube-proxy, CoreDNS, the CNI bridge) and an endpointslice controller, started once for
this module and torn down after it (tests/integration/localnodes.py); the teardown itself is
checked (no namespace, link, process, mount or cgroup left behind).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient

from engine import identity, kube, runner
from engine.core import plan
from engine.local.natsserver import NatsServer
from tests.integration.localnodes import (
    CLUSTERS,
    NodeClusters,
    connect_pod,
    export,
    fresh_namespace,
    run_pod,
    service,
    socat_server,
    until,
)

pytestmark = pytest.mark.integration


async def test_each_cluster_has_a_ready_node_of_its_own(node_clusters: NodeClusters) -> None:
    for name, k in node_clusters.kubes.items():
        items, _ = await k.list(kube.Resource("", "v1", "nodes", "Node", namespaced=False))
        assert [n["metadata"]["name"] for n in items] == [f"{name}-node"]
        ready = {c["type"]: c["status"] for c in items[0]["status"]["conditions"]}["Ready"]
        assert ready == "True"
        assert items[0]["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


async def test_a_pod_reaches_a_pod_of_the_other_cluster_by_ip_over_tcp(
    node_clusters: NodeClusters,
) -> None:
    ns = await fresh_namespace(node_clusters)
    ip1 = await socat_server(node_clusters, "cluster-1", ns)
    ip2 = await socat_server(node_clusters, "cluster-2", ns)
    assert await connect_pod(node_clusters, "cluster-2", ns, "client", ip1) == ip1
    assert await connect_pod(node_clusters, "cluster-1", ns, "client", ip2) == ip2


async def test_a_command_runs_in_a_pod_through_the_exec_subresource(
    node_clusters: NodeClusters,
) -> None:
    """pods/exec goes apiserver -> kubelet -> containerd's stream server and back."""
    ns = await fresh_namespace(node_clusters)
    for cluster in CLUSTERS:
        ip = await socat_server(node_clusters, cluster, ns)
        k = node_clusters.kubes[cluster]
        async with WsApiClient(configuration=k.api.configuration) as ws:
            out = await client.CoreV1Api(ws).connect_get_namespaced_pod_exec(
                "server",
                ns,
                # The stub says str; WsApiClient sends a list as one parameter per argument.
                command=["sh", "-c", "echo $POD_IP; cat /etc/debian_version"],  # type: ignore[arg-type]
                stdout=True,
                stderr=True,
                stdin=False,
                tty=False,
            )
        lines = str(out).splitlines()
        assert lines[0] == ip, out
        assert lines[1].startswith("12."), out


async def test_a_pod_reaches_its_apiserver_with_in_cluster_configuration(
    node_clusters: NodeClusters,
) -> None:
    """What mcsync needs to run as a pod: the ``kubernetes`` Service through kube-proxy to the
    apiserver on the host, its name in DNS, a ServiceAccount token and the cluster's CA."""
    ns = await fresh_namespace(node_clusters)
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    out = await run_pod(
        node_clusters,
        "cluster-1",
        ns,
        "client",
        f"for i in $(seq 30); do code=$(curl -sS --max-time 3 --cacert {sa}/ca.crt "
        f'-H "Authorization: Bearer $(cat {sa}/token)" -o /tmp/body -w "%{{http_code}}" '
        f"https://kubernetes.default.svc/api/v1/namespaces/{ns}/pods/client) && break; "
        f"sleep 1; done; echo $code $(grep -o 'system:serviceaccount:[a-z0-9:-]*' /tmp/body)",
    )
    # Authenticated as the pod's ServiceAccount, which RBAC lets read nothing.
    assert out == f"403 system:serviceaccount:{ns}:default", out


async def test_kube_proxy_programs_a_services_cluster_ip_over_tcp_and_udp(
    node_clusters: NodeClusters,
) -> None:
    ns = await fresh_namespace(node_clusters)
    k = node_clusters.kubes["cluster-1"]
    server_ip = await socat_server(node_clusters, "cluster-1", ns)
    svc = await k.create(kube.SERVICES, service(ns, "hello", "server"))
    vip = svc["spec"]["clusterIP"]
    # The controller manager's endpointslice controller fills the Service's slice.
    await until(lambda: _slice_has(k, ns, "hello", server_ip), timeout=60)
    out = await run_pod(
        node_clusters,
        "cluster-1",
        ns,
        "client",
        f'for i in $(seq 30); do r=$(nc -w 2 {vip} 42 </dev/null) && [ -n "$r" ] && break; '
        f"sleep 1; done; echo tcp $r; echo udp $(echo x | nc -u -w 2 {vip} 42); "
        f"echo dns $(dig +short hello.{ns}.svc.cluster.local)",
    )
    assert out.splitlines() == [f"tcp {server_ip}", f"udp {server_ip}", f"dns {vip}"], out


async def _slice_has(k: kube.Kube, ns: str, svc: str, ip: str) -> bool:
    items, _ = await k.list(kube.ENDPOINT_SLICES, ns, f"kubernetes.io/service-name={svc}")
    return any(ip in e["addresses"] for s in items for e in s.get("endpoints") or [])


@pytest.fixture
async def mcsync_members(
    node_clusters: NodeClusters, nats_server: NatsServer
) -> AsyncIterator[dict[str, runner.Member]]:
    """A publisher and a subscriber per node cluster, in this process, on a fresh clusterset."""
    clusterset = f"t{uuid.uuid4().hex[:10]}"
    members: dict[str, runner.Member] = {}
    try:
        for c in node_clusters.control_planes.clusters:
            await identity.write(node_clusters.kubes[c.name], c.name, clusterset)
            m = runner.Member(
                cluster=c.name,
                clusterset=clusterset,
                kubeconfig=c.kubeconfig_path,
                nats_url=nats_server.url,
            )
            await m.start()
            members[c.name] = m
        await asyncio.gather(*(m.wait_ready() for m in members.values()))
        yield members
    finally:
        for m in members.values():
            await m.stop()


async def test_a_pod_reaches_a_service_exported_by_another_cluster_by_its_clusterset_name(
    node_clusters: NodeClusters, mcsync_members: dict[str, runner.Member]
) -> None:
    """The conformance suite's connectivity case: a pod in cluster-2 resolves
    ``hello.<ns>.svc.clusterset.local`` to the ServiceImport's IP and reaches the pod behind
    cluster-1's exported Service over TCP and UDP; ``cluster.local`` does not know the name."""
    ns = await fresh_namespace(node_clusters)
    one, two = node_clusters.kubes["cluster-1"], node_clusters.kubes["cluster-2"]
    server_ip = await socat_server(node_clusters, "cluster-1", ns)
    await one.create(kube.SERVICES, service(ns, "hello", "server"))
    await one.create(kube.SERVICE_EXPORTS, export(ns, "hello"))

    async def imported() -> str | None:
        imp = await two.get(kube.SERVICE_IMPORTS, ns, "hello")
        ips = (imp or {}).get("spec", {}).get("ips") or []
        if not ips:
            return None
        items, _ = await two.list(
            kube.ENDPOINT_SLICES, ns, f"kubernetes.io/service-name={plan.derived_name(ns, 'hello')}"
        )
        found = any(server_ip in e["addresses"] for s in items for e in s.get("endpoints") or [])
        return str(ips[0]) if found else None

    vip = await until(imported, timeout=60)
    name = f"hello.{ns}.svc.clusterset.local"
    out = await run_pod(
        node_clusters,
        "cluster-2",
        ns,
        "client",
        f'for i in $(seq 30); do ip=$(dig +short {name}); [ -n "$ip" ] && break; sleep 1; done; '
        f"echo dns $ip; "
        f'for i in $(seq 30); do r=$(nc -w 2 {name} 42 </dev/null) && [ -n "$r" ] && break; '
        f"sleep 1; done; echo tcp $r; echo udp $(echo x | nc -u -w 2 {name} 42); "
        f"echo local $(dig +short hello.{ns}.svc.cluster.local)",
    )
    assert out.splitlines() == [
        f"dns {vip}",
        f"tcp {server_ip}",
        f"udp {server_ip}",
        "local",
    ], out


async def test_a_service_that_is_not_exported_has_no_clusterset_name(
    node_clusters: NodeClusters, mcsync_members: dict[str, runner.Member]
) -> None:
    """Only exported Services get a ``clusterset.local`` name; a local Service of the same name
    as an import keeps its own ``cluster.local`` name and IP."""
    ns = await fresh_namespace(node_clusters)
    one, two = node_clusters.kubes["cluster-1"], node_clusters.kubes["cluster-2"]
    await socat_server(node_clusters, "cluster-1", ns)
    await one.create(kube.SERVICES, service(ns, "hello", "server"))
    await one.create(kube.SERVICES, service(ns, "hidden", "server"))
    await one.create(kube.SERVICE_EXPORTS, export(ns, "hello"))
    local = await two.create(kube.SERVICES, service(ns, "hello", "server"))

    async def imported() -> str | None:
        imp = await two.get(kube.SERVICE_IMPORTS, ns, "hello")
        ips = (imp or {}).get("spec", {}).get("ips") or []
        return str(ips[0]) if ips else None

    vip = await until(imported, timeout=60)
    assert vip != local["spec"]["clusterIP"]
    zone = f"{ns}.svc.clusterset.local"
    out = await run_pod(
        node_clusters,
        "cluster-2",
        ns,
        "client",
        f'for i in $(seq 30); do ip=$(dig +short hello.{zone}); [ -n "$ip" ] && break; '
        f"sleep 1; done; echo hello $ip; echo hidden $(dig +short hidden.{zone}); "
        f"echo status $(dig hidden.{zone} | grep -o 'status: [A-Z]*'); "
        f"echo local $(dig +short hello.{ns}.svc.cluster.local)",
    )
    assert out.splitlines() == [
        f"hello {vip}",
        "hidden",
        "status status: NXDOMAIN",
        f"local {local['spec']['clusterIP']}",
    ], out


async def test_a_headless_service_exported_from_both_clusters_resolves_to_every_pod(
    node_clusters: NodeClusters, mcsync_members: dict[str, runner.Member]
) -> None:
    """Headless: the clusterset name has an A record per ready endpoint of every exporting
    cluster, ``<hostname>.<clusterid>.<svc>.<ns>.svc.clusterset.local`` names each, and SRV
    records list them by port."""
    ns = await fresh_namespace(node_clusters)
    ips = {}
    for cluster, host in (("cluster-1", "a"), ("cluster-2", "b")):
        k = node_clusters.kubes[cluster]
        ips[host] = await socat_server(
            node_clusters, cluster, ns, name=f"web-{host}", app="web", hostname=host,
            subdomain="web",
        )  # fmt: skip
        await k.create(kube.SERVICES, service(ns, "web", "web", clusterIP="None"))
        await k.create(kube.SERVICE_EXPORTS, export(ns, "web"))
    two = node_clusters.kubes["cluster-2"]

    async def both_imported() -> bool:
        items, _ = await two.list(
            kube.ENDPOINT_SLICES, ns, "multicluster.kubernetes.io/service-name=web"
        )
        hosts = {e.get("hostname") for s in items for e in s.get("endpoints") or []}
        return hosts == {"a", "b"}

    await until(both_imported, timeout=60)
    zone = f"web.{ns}.svc.clusterset.local"
    out = await run_pod(
        node_clusters,
        "cluster-2",
        ns,
        "client",
        f"for i in $(seq 30); do n=$(dig +short {zone} | wc -l); [ $n -ge 2 ] && break; "
        f"sleep 1; done; echo A $(dig +short {zone} | sort); "
        f"echo a $(dig +short a.cluster-1.{zone}); echo b $(dig +short b.cluster-2.{zone}); "
        f"echo SRV $(dig +short SRV _tcp._tcp.{zone} | awk '{{print $3, $4}}' | sort)",
    )
    lines = out.splitlines()
    assert lines[0] == "A " + " ".join(sorted(ips.values())), out
    assert lines[1] == f"a {ips['a']}", out
    assert lines[2] == f"b {ips['b']}", out
    assert lines[3] == f"SRV 42 a.cluster-1.{zone}. 42 b.cluster-2.{zone}.", out


async def _mcs_state(nc: NodeClusters, cluster: str, ns: str) -> dict[str, Any]:
    """What a test waits on, for its assertion messages: the import's IPs and ports, the
    addresses of its MCS EndpointSlices by source cluster, the exports' Conflict status."""
    k = nc.kubes[cluster]
    imp = await k.get(kube.SERVICE_IMPORTS, ns, "hello")
    spec = (imp or {}).get("spec", {})
    items, _ = await k.list(
        kube.ENDPOINT_SLICES, ns, "multicluster.kubernetes.io/service-name=hello"
    )
    slices: dict[str, list[str]] = {}
    for sl in items:
        src = sl["metadata"]["labels"].get("multicluster.kubernetes.io/source-cluster", "")
        slices[src] = sorted(a for e in sl.get("endpoints") or [] for a in e["addresses"])
        slices[src] += [f"port {p.get('name')}/{p.get('port')}" for p in sl.get("ports") or []]
    conflict = {}
    for name, kk in nc.kubes.items():
        se = await kk.get(kube.SERVICE_EXPORTS, ns, "hello")
        conds = {c["type"]: c for c in (se or {}).get("status", {}).get("conditions") or []}
        conflict[name] = conds.get("Conflict", {}).get("status")
    return {
        "ips": spec.get("ips") or [],
        "ports": sorted((p.get("name", ""), p["port"]) for p in spec.get("ports") or []),
        "slices": slices,
        "conflict": conflict,
    }


async def _settle(nc: NodeClusters, cluster: str, ns: str, ports: int, ips: set[str]) -> None:
    """Until ``cluster``'s import has an IP, ``ports`` ports and exactly the endpoints ``ips``,
    and every export shows Conflict=True."""

    async def settled() -> bool:
        st = await _mcs_state(nc, cluster, ns)
        got = {a for addrs in st["slices"].values() for a in addrs if not a.startswith("port")}
        conflict = set(st["conflict"].values()) == {"True"}
        return bool(st["ips"]) and len(st["ports"]) == ports and got == ips and conflict

    try:
        await until(settled, timeout=60)
    except AssertionError:
        st = await _mcs_state(nc, cluster, ns)
        raise AssertionError(f"{cluster}: import not settled: {st}") from None


def _ten_times(name: str, port: int) -> str:
    """A client script: wait until ``name`` resolves and ``port`` answers (kube-proxy programs a
    new port a moment after its slice appears), then connect to it ten times, a line each."""
    return (
        f'for i in $(seq 30); do [ -n "$(dig +short {name})" ] && break; sleep 1; done; '
        f'for i in $(seq 30); do [ -n "$(nc -w 2 {name} {port} </dev/null)" ] && break; '
        f"sleep 1; done; "
        f"for i in $(seq 10); do echo $(nc -w 2 {name} {port} </dev/null); done"
    )


async def test_a_port_of_the_same_name_but_another_number_routes_only_to_the_winning_cluster(
    node_clusters: NodeClusters, mcsync_members: dict[str, runner.Member]
) -> None:
    """Conformance's StrictPortConflict case: cluster-2 exports port ``tcp`` as 4242 (to the
    same container port), cluster-1's older export has it as 42: the import has port 42, and
    connections to it reach cluster-1's pod every time, from both clusters."""
    ns = await fresh_namespace(node_clusters)
    one, two = node_clusters.kubes["cluster-1"], node_clusters.kubes["cluster-2"]
    ip1 = await socat_server(node_clusters, "cluster-1", ns)
    ip2 = await socat_server(node_clusters, "cluster-2", ns)
    await one.create(kube.SERVICES, service(ns, "hello", "server"))
    await one.create(kube.SERVICE_EXPORTS, export(ns, "hello"))
    port = {"name": "tcp", "port": 4242, "targetPort": 42, "protocol": "TCP"}
    await two.create(kube.SERVICES, service(ns, "hello", "server", ports=[port]))
    await two.create(kube.SERVICE_EXPORTS, export(ns, "hello"))
    name = f"hello.{ns}.svc.clusterset.local"
    for cluster in CLUSTERS:
        # cluster-2's slice is there too, without the port it does not serve as 42.
        await _settle(node_clusters, cluster, ns, 2, {ip1, ip2})
        out = await run_pod(node_clusters, cluster, ns, f"client-{cluster}", _ten_times(name, 42))
        assert out.splitlines() == [ip1] * 10, out


async def test_a_port_of_another_name_routes_each_port_only_to_the_cluster_exposing_it(
    node_clusters: NodeClusters, mcsync_members: dict[str, runner.Member]
) -> None:
    """Conformance's other StrictPortConflict case: cluster-2's port is ``tcp2`` 4242: the
    import has both ports; 42 reaches only cluster-1's pod, 4242 only cluster-2's."""
    ns = await fresh_namespace(node_clusters)
    one, two = node_clusters.kubes["cluster-1"], node_clusters.kubes["cluster-2"]
    ip1 = await socat_server(node_clusters, "cluster-1", ns)
    ip2 = await socat_server(node_clusters, "cluster-2", ns)
    await one.create(kube.SERVICES, service(ns, "hello", "server"))
    await one.create(kube.SERVICE_EXPORTS, export(ns, "hello"))
    port = {"name": "tcp2", "port": 4242, "targetPort": 42, "protocol": "TCP"}
    await two.create(kube.SERVICES, service(ns, "hello", "server", ports=[port]))
    await two.create(kube.SERVICE_EXPORTS, export(ns, "hello"))
    await _settle(node_clusters, "cluster-2", ns, 3, {ip1, ip2})
    name = f"hello.{ns}.svc.clusterset.local"
    out = await run_pod(
        node_clusters,
        "cluster-2",
        ns,
        "client",
        _ten_times(name, 42) + "; " + _ten_times(name, 4242),
    )
    assert out.splitlines() == [ip1] * 10 + [ip2] * 10, out
