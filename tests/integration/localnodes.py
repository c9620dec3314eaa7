"""Local nodes for the integration tests: two clusters with a node each, and the functions their
tests share (pods on a node, a socat server, a client's output, Services and exports).

``node_clusters`` (tests/integration/conftest.py) starts them once per module and checks the
teardown (no namespace, link, process, mount or cgroup left behind); a module that sets
``MCSYNC_IMAGE = True`` gets mcsync's own image imported into every node as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import kube
from engine.local import controlplane, images, netns, nodes

PODS = kube.Resource("", "v1", "pods", "Pod")
SERVICE_ACCOUNTS = kube.Resource("", "v1", "serviceaccounts", "ServiceAccount")
CLUSTERS = ["cluster-1", "cluster-2"]


@dataclass
class NodeClusters:
    network: netns.Network
    control_planes: controlplane.LocalClusters
    nodes: nodes.LocalNodes
    kubes: dict[str, kube.Kube] = field(default_factory=dict)


def leftovers(run_id: str, base: Path, cgroup_roots: list[str]) -> list[str]:
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


@contextlib.asynccontextmanager
async def started(base: Path, mcsync_image: bool = False) -> AsyncIterator[NodeClusters]:
    """Two clusters with a node each under ``base``; everything stopped and checked after.

    Without ``mcsync_image`` the test process installs mcsync's CRDs and namespace (its
    publishers and subscribers run in the test process); with it, mcsync's Helm chart does."""
    net = netns.Network(len(CLUSTERS))
    await asyncio.to_thread(net.create)
    lc = controlplane.LocalClusters(
        CLUSTERS,
        bind_addresses=[n.host_ip for n in net.nodes],
        kubeconfig_dir=base / "kubeconfigs",
    )
    ln = nodes.LocalNodes(lc, net, base_dir=base / "nodes", mcsync_image=mcsync_image)
    nc = NodeClusters(net, lc, ln)
    cgroup_roots: list[str] = []
    try:
        await lc.start()
        await ln.start()
        cgroup_roots = [n.cgroup_root for n in ln.nodes]
        for c in lc.clusters:
            k = kube.Kube(await kube.load_client(c.kubeconfig_path), "mcsync-tests")
            nc.kubes[c.name] = k
            if not mcsync_image:
                await kube.install_crds(k)
                await k.create(kube.NAMESPACES, {"metadata": {"name": "mcsync-system"}})
        yield nc
    finally:
        for k in nc.kubes.values():
            await k.api.close()
        ln.stop()
        lc.stop()
        net.destroy()
    assert leftovers(net.run_id, base / "nodes", cgroup_roots) == []


async def until(probe: Any, timeout: float = 90.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"not within {timeout}s; last: {last!r}")


def pod_manifest(
    ns: str, name: str, node: str, image: str, args: list[str], **spec: Any
) -> kube.Obj:
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


async def phase(k: kube.Kube, ns: str, name: str, *phases: str) -> kube.Obj | None:
    pod = await k.get(PODS, ns, name)
    if pod and pod.get("status", {}).get("phase") in phases:
        return pod
    return None


async def wait_phase(k: kube.Kube, ns: str, name: str, *phases: str) -> kube.Obj:
    try:
        pod: kube.Obj = await until(lambda: phase(k, ns, name, *phases))
    except AssertionError:
        pod = await k.get(PODS, ns, name) or {}
        raise AssertionError(f"pod {ns}/{name} not {phases}: {pod.get('status')}") from None
    return pod


async def fresh_namespace(nc: NodeClusters) -> str:
    """A fresh namespace in both clusters, once its ``default`` ServiceAccount exists (pods
    need it)."""
    ns = f"t-{uuid.uuid4().hex[:10]}"
    for k in nc.kubes.values():
        await k.create(kube.NAMESPACES, {"metadata": {"name": ns}})
    for k in nc.kubes.values():
        await until(lambda k=k: k.get(SERVICE_ACCOUNTS, ns, "default"), timeout=30, interval=0.2)
    return ns


async def socat_server(
    nc: NodeClusters, cluster: str, ns: str, name: str = "server", app: str = "", **spec: Any
) -> str:
    """A socat pod that answers on TCP and UDP port 42 with its pod IP (as the conformance
    suite's server does); its IP. Labelled ``app: <app or name>``."""
    node = nc.nodes[cluster]
    k = nc.kubes[cluster]
    pod = pod_manifest(ns, name, node.name, images.SERVER, [], **spec)
    pod["metadata"]["labels"] = {"app": app or name}
    pod["spec"]["containers"][0]["command"] = [
        "sh",
        "-c",
        "socat UDP-LISTEN:42,fork,reuseaddr 'SYSTEM:echo $POD_IP' & "
        "exec socat TCP-LISTEN:42,fork,reuseaddr 'SYSTEM:echo $POD_IP'",
    ]
    await k.create(PODS, pod)
    pod = await wait_phase(k, ns, name, "Running")
    ip = str(pod["status"]["podIP"])
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(node.links.pod_cidr)
    return ip


async def connect_pod(nc: NodeClusters, cluster: str, ns: str, name: str, target: str) -> str:
    """Run a client pod in ``cluster`` that connects to ``target`` port 42; what it read."""
    return await run_pod(nc, cluster, ns, name, f"nc -w 5 {target} 42 </dev/null")


async def run_pod(nc: NodeClusters, cluster: str, ns: str, name: str, script: str) -> str:
    """Run ``script`` in a client pod on ``cluster``'s node to completion; its output."""
    node = nc.nodes[cluster]
    k = nc.kubes[cluster]
    pod = pod_manifest(ns, name, node.name, images.CLIENT, [], restartPolicy="Never")
    pod["spec"]["containers"][0]["command"] = ["sh", "-c", script]
    await k.create(PODS, pod)
    done = await wait_phase(k, ns, name, "Succeeded", "Failed")
    status, text = await k.probe(f"/api/v1/namespaces/{ns}/pods/{name}/log")
    assert status == 200, text
    assert done["status"]["phase"] == "Succeeded", text
    return text.strip()


def service(ns: str, name: str, app: str, **spec: Any) -> kube.Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"app": app},
            "ports": [
                {"name": "tcp", "port": 42, "protocol": "TCP"},
                {"name": "udp", "port": 42, "protocol": "UDP"},
            ],
            **spec,
        },
    }


def export(ns: str, name: str) -> kube.Obj:
    return {
        "apiVersion": kube.SERVICE_EXPORTS.api_version,
        "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": ns},
    }
