"""Local nodes are real: pods run on a kubelet in each cluster, and reach each other's pods.

Two clusters, each with one node in a network namespace of its own (containerd, runc, the
kubelet, kube-proxy, the CNI bridge), started once for this module and torn down after it; the
teardown itself is checked (no namespace, link, process, mount or cgroup left behind).
"""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine import kube
from engine.local import controlplane, images, netns, nodes

pytestmark = pytest.mark.integration

PODS = kube.Resource("", "v1", "pods", "Pod")
CLUSTERS = ["cluster-1", "cluster-2"]


@dataclass
class NodeClusters:
    network: netns.Network
    control_planes: controlplane.LocalClusters
    nodes: nodes.LocalNodes
    kubes: dict[str, kube.Kube] = field(default_factory=dict)


def _leftovers(run_id: str, base: Path, cgroup_roots: list[str]) -> list[str]:
    """What a run left behind: namespaces, host links, mounts, cgroups, shim processes."""
    left = [f"netns {n}" for n in netns.namespaces() if run_id in n]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    left += [
        f"link {line.split(':')[1].strip()}" for line in links.stdout.splitlines() if run_id in line
    ]
    mounts = Path("/proc/self/mountinfo").read_text()
    left += [f"mount {line.split()[4]}" for line in mounts.splitlines() if str(base) in line]
    for h in nodes.cgroup_hierarchies(unified=True):
        left += [
            f"cgroup {h / r.lstrip('/')}" for r in cgroup_roots if (h / r.lstrip("/")).exists()
        ]
    for pid in Path("/proc").iterdir():
        if pid.name.isdigit():
            try:
                cmd = (pid / "cmdline").read_bytes()
            except OSError:
                continue
            if str(base).encode() in cmd:
                left.append(f"process {pid.name} {cmd[:80]!r}")
    return left


@pytest.fixture(scope="module")
async def node_clusters(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NodeClusters]:
    net = netns.Network(len(CLUSTERS))
    await asyncio.to_thread(net.create)
    base = tmp_path_factory.mktemp("nodes")
    lc = controlplane.LocalClusters(
        CLUSTERS,
        bind_addresses=[n.host_ip for n in net.nodes],
        kubeconfig_dir=base / "kubeconfigs",
    )
    ln = nodes.LocalNodes(lc, net, base_dir=base / "nodes")
    nc = NodeClusters(net, lc, ln)
    cgroup_roots: list[str] = []
    try:
        await lc.start()
        await ln.start()
        cgroup_roots = [n.cgroup_root for n in ln.nodes]
        for c in lc.clusters:
            nc.kubes[c.name] = kube.Kube(await kube.load_client(c.kubeconfig_path), "mcsync-tests")
        yield nc
    finally:
        for k in nc.kubes.values():
            await k.api.close()
        ln.stop()
        lc.stop()
        net.destroy()
    assert _leftovers(net.run_id, base / "nodes", cgroup_roots) == []


async def _until(probe: Any, timeout: float = 90.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"not within {timeout}s; last: {last!r}")


def _pod(ns: str, name: str, node: str, image: str, args: list[str], **spec: Any) -> kube.Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "args": args,
                    "env": [
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                    ],
                }
            ],
            **spec,
        },
    }


async def _phase(k: kube.Kube, ns: str, name: str, *phases: str) -> kube.Obj | None:
    pod = await k.get(PODS, ns, name)
    if pod and pod.get("status", {}).get("phase") in phases:
        return pod
    return None


async def _wait_phase(k: kube.Kube, ns: str, name: str, *phases: str) -> kube.Obj:
    try:
        pod: kube.Obj = await _until(lambda: _phase(k, ns, name, *phases))
    except AssertionError:
        pod = await k.get(PODS, ns, name) or {}
        raise AssertionError(f"pod {ns}/{name} not {phases}: {pod.get('status')}") from None
    return pod


async def _namespace(nc: NodeClusters) -> str:
    ns = f"t-{uuid.uuid4().hex[:10]}"
    for k in nc.kubes.values():
        await k.create(kube.NAMESPACES, {"metadata": {"name": ns}})
    return ns


async def _server(nc: NodeClusters, cluster: str, ns: str) -> str:
    """A socat pod that answers a TCP connection on port 42 with its pod IP; its IP."""
    node = nc.nodes[cluster]
    k = nc.kubes[cluster]
    args = ["TCP-LISTEN:42,fork,reuseaddr", "SYSTEM:echo $POD_IP"]
    await k.create(PODS, _pod(ns, "server", node.name, images.SERVER, args))
    pod = await _wait_phase(k, ns, "server", "Running")
    ip = str(pod["status"]["podIP"])
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(node.links.pod_cidr)
    return ip


async def _connect(nc: NodeClusters, cluster: str, ns: str, name: str, target: str) -> str:
    """Run a client pod in ``cluster`` that connects to ``target`` port 42; what it read."""
    node = nc.nodes[cluster]
    k = nc.kubes[cluster]
    script = f"nc -w 5 {target} 42 </dev/null"
    pod = _pod(ns, name, node.name, images.CLIENT, [], restartPolicy="Never")
    pod["spec"]["containers"][0]["command"] = ["sh", "-c", script]
    await k.create(PODS, pod)
    done = await _wait_phase(k, ns, name, "Succeeded", "Failed")
    status, text = await k.probe(f"/api/v1/namespaces/{ns}/pods/{name}/log")
    assert status == 200, text
    assert done["status"]["phase"] == "Succeeded", text
    return text.strip()


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
    ns = await _namespace(node_clusters)
    ip1 = await _server(node_clusters, "cluster-1", ns)
    ip2 = await _server(node_clusters, "cluster-2", ns)
    assert await _connect(node_clusters, "cluster-2", ns, "client", ip1) == ip1
    assert await _connect(node_clusters, "cluster-1", ns, "client", ip2) == ip2
