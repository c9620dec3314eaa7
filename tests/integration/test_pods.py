"""mcsync as pods: its publishers and subscribers installed from the Helm chart onto real local
nodes, with in-cluster configuration, probes and RBAC, running the MCS scenarios.

Two clusters with a node each (tests/integration/localnodes.py), mcsync's image made from this
checkout the Dockerfile's way (``deploy/image/install.sh`` in a Debian root) and imported into
each node's containerd. A hub nats-server runs the configuration ``engine.natsconfig`` renders
for the mirror layout (the chart's default ``nats.logLayout``): each cluster's user in an
account of its own, allowed its own subjects only. It listens on every host address, so that
each node's pods reach it at the host end of their node's link; the chart gets that URL and the
cluster's password as a Secret. The chart is installed once per cluster with helm: CRDs, RBAC,
the admission fence, the ClusterProperties and the two Deployments, which the kube-scheduler
places on the node. Everything is started once for the module.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine import jetstream, kube, natsconfig
from engine.core import plan
from engine.local import controlplane, procs
from engine.local.natsserver import NatsServer
from tests.integration.localnodes import (
    CLUSTERS,
    PODS,
    NodeClusters,
    export,
    fresh_namespace,
    run_pod,
    service,
    socat_server,
    until,
)
from tests.integration.test_nats_permissions import HASHES, PASSWORDS

pytestmark = pytest.mark.integration

MCSYNC_IMAGE = True
"""The node_clusters fixture imports mcsync's image into the nodes (and leaves the CRDs and
mcsync's namespace to the chart)."""

CLUSTERSET = "pods"
NAMESPACE = "mcsync-system"
RELEASE = "mcsync"
CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "mcsync"
SECRETS = kube.Resource("", "v1", "secrets", "Secret")
LOGINS = {"cluster-1": "a", "cluster-2": "b"}
"""Each cluster's test-only password (tests/integration/test_nats_permissions.py)."""


@dataclass
class PodHub(NatsServer):
    """The clusterset's hub in the mirror layout, on every host address (pods reach it at their
    node's host end); its monitor on loopback."""

    def _config(self) -> str:
        assert self.store_dir is not None
        hub = natsconfig.Hub(
            clusterset=CLUSTERSET,
            clusters={c: natsconfig.bcrypt_password(HASHES[u]) for c, u in LOGINS.items()},
            admin=natsconfig.bcrypt_password(HASHES["admin"]),
            mirrors=True,
            listen=f"0.0.0.0:{self.port}",
            monitor=f"127.0.0.1:{self._monitor_port}",
            store_dir=str(self.store_dir / "js"),
            max_file_store="4G",
        )
        return natsconfig.render_hub(hub)


@dataclass
class Installed:
    nc: NodeClusters
    hub: PodHub


def helm() -> str:
    path = controlplane.bin_dir() / "helm"
    if not path.exists():
        subprocess.run(
            ["bash", str(CHART.parents[2] / "engine/local/scripts/build-control-plane.sh"), "helm"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return str(path)


def _helm_install(nc: NodeClusters, cluster: str, nats_url: str) -> None:
    c = nc.control_planes[cluster]
    r = subprocess.run(
        [
            helm(),
            "install",
            RELEASE,
            str(CHART),
            f"--kubeconfig={c.kubeconfig_path}",
            f"--namespace={NAMESPACE}",
            f"--set=clusterset={CLUSTERSET}",
            f"--set=clusterId={cluster}",
            "--set=createClusterProperties=true",
            f"--set=nats.url={nats_url}",
            # The image is on the node already; nothing to pull from.
            "--set=image.pullPolicy=Never",
            "--set=logLevel=debug",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
async def installed(
    node_clusters: NodeClusters, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Installed]:
    """The hub with the clusterset's log, and the chart installed in both clusters."""
    hub = PodHub(store_dir=tmp_path_factory.mktemp("hub"), port=procs.free_port())
    async with hub:
        # The administrator provisions the log; each cluster's processes create their mirror.
        admin = await jetstream.connect(hub.url, user="admin", password=PASSWORDS["admin"])
        try:
            await jetstream.EventLog(admin, CLUSTERSET).ensure()
        finally:
            await admin.close()
        for cluster in CLUSTERS:
            k = node_clusters.kubes[cluster]
            await k.create(kube.NAMESPACES, {"metadata": {"name": NAMESPACE}})
            password = PASSWORDS[LOGINS[cluster]].encode()
            await k.create(
                SECRETS,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "mcsync-nats", "namespace": NAMESPACE},
                    "data": {"password": base64.b64encode(password).decode()},
                },
            )
            url = f"nats://{node_clusters.nodes[cluster].links.host_ip}:{hub.port}"
            await asyncio.to_thread(_helm_install, node_clusters, cluster, url)
        inst = Installed(node_clusters, hub)
        await asyncio.gather(*(_wait_ready(inst, c) for c in CLUSTERS))
        yield inst


async def _mcsync_pods(nc: NodeClusters, cluster: str) -> list[kube.Obj]:
    items, _ = await nc.kubes[cluster].list(
        PODS, NAMESPACE, f"app.kubernetes.io/instance={RELEASE}"
    )
    return items


def _ready(pod: kube.Obj) -> bool:
    conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions") or []}
    return conds.get("Ready") == "True"


async def _logs(nc: NodeClusters, cluster: str, pod: str) -> str:
    status, text = await nc.kubes[cluster].probe(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/log")
    assert status == 200, text
    return text


async def _wait_ready(inst: Installed, cluster: str) -> None:
    nc = inst.nc

    async def ready() -> bool:
        pods = await _mcsync_pods(nc, cluster)
        components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods}
        return components == {"publisher", "subscriber"} and all(_ready(p) for p in pods)

    try:
        await until(ready, timeout=180, interval=1.0)
    except AssertionError:
        pods = await _mcsync_pods(nc, cluster)
        state = {p["metadata"]["name"]: p.get("status") for p in pods}
        logs = {}
        for p in pods:
            with_logs = await nc.kubes[cluster].probe(
                f"/api/v1/namespaces/{NAMESPACE}/pods/{p['metadata']['name']}/log"
            )
            logs[p["metadata"]["name"]] = with_logs[1][-3000:]
        raise AssertionError(f"{cluster}: mcsync's pods not Ready: {state}\n{logs}") from None


async def test_the_charts_publisher_and_subscriber_run_ready_on_each_node(
    installed: Installed,
) -> None:
    """Scheduled onto the node, the image's non-root user, Ready by their probes, talking to
    their apiserver with their own ServiceAccount's token (in-cluster configuration) without
    a single 403."""
    nc = installed.nc
    for cluster in CLUSTERS:
        pods = await _mcsync_pods(nc, cluster)
        assert len(pods) == 2
        for pod in pods:
            name = pod["metadata"]["name"]
            component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
            assert pod["spec"]["nodeName"] == f"{cluster}-node"
            assert pod["spec"]["serviceAccountName"] == f"{RELEASE}-{component}"
            assert _ready(pod), pod["status"]
            (st,) = pod["status"]["containerStatuses"]
            if st["restartCount"]:
                _, before = await nc.kubes[cluster].probe(
                    f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/log?previous=true"
                )
                raise AssertionError(f"{name} restarted: {st}\n{before[-3000:]}")
            assert st["ready"], st
            assert st["image"] == "docker.io/library/mcsync:0.1.0"
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
            # In-cluster configuration: the ServiceAccount's token, no kubeconfig.
            projected = [v["name"] for v in pod["spec"]["volumes"] if "projected" in v]
            assert any(n.startswith("kube-api-access-") for n in projected), projected
            env = {e["name"] for e in pod["spec"]["containers"][0].get("env") or []}
            assert "KUBECONFIG" not in env
            logs = await _logs(nc, cluster, name)
            # A refused API call says Forbidden or 403 (never inside a longer number, such as
            # the microseconds of a timestamp).
            denied = re.search(r"(?i)forbidden|(?<![\d.:])403(?!\d)", logs)
            assert denied is None, logs[max(0, denied.start() - 1500) : denied.end() + 500]
            assert logs, name


async def test_an_export_reaches_the_other_cluster_through_the_pods_and_is_withdrawn(
    installed: Installed,
) -> None:
    """The MCS scenario with mcsync in pods: cluster-1 exports ``hello``; cluster-2 gets the
    ServiceImport, its derived Service and EndpointSlices, and a pod there resolves
    ``hello.<ns>.svc.clusterset.local`` and reaches cluster-1's pod over TCP. The other way
    round too. Unexporting withdraws the import and the name."""
    nc = installed.nc
    ns = await fresh_namespace(nc)
    for here, there in (("cluster-1", "cluster-2"), ("cluster-2", "cluster-1")):
        src, dst = nc.kubes[here], nc.kubes[there]
        name = f"hello-{here}"
        server_ip = await socat_server(nc, here, ns, name=f"server-{here}", app=name)
        await src.create(kube.SERVICES, service(ns, name, name))
        await src.create(kube.SERVICE_EXPORTS, export(ns, name))

        async def imported(dst: kube.Kube = dst, name: str = name, ip: str = server_ip) -> str:
            imp = await dst.get(kube.SERVICE_IMPORTS, ns, name)
            ips = (imp or {}).get("spec", {}).get("ips") or []
            derived = plan.derived_name(ns, name)
            svc = await dst.get(kube.SERVICES, ns, derived)
            items, _ = await dst.list(
                kube.ENDPOINT_SLICES, ns, f"kubernetes.io/service-name={derived}"
            )
            found = any(ip in e["addresses"] for s in items for e in s.get("endpoints") or [])
            return str(ips[0]) if ips and svc and found else ""

        vip = await until(imported, timeout=90)
        fqdn = f"{name}.{ns}.svc.clusterset.local"
        out = await run_pod(
            nc,
            there,
            ns,
            f"client-{there}",
            f'for i in $(seq 30); do ip=$(dig +short {fqdn}); [ -n "$ip" ] && break; sleep 1; '
            f"done; echo dns $ip; "
            f'for i in $(seq 30); do r=$(nc -w 2 {fqdn} 42 </dev/null) && [ -n "$r" ] && break; '
            f"sleep 1; done; echo tcp $r",
        )
        assert out.splitlines() == [f"dns {vip}", f"tcp {server_ip}"], out

    # Unexport: cluster-2 loses the import of cluster-1's service, and its name.
    one, two = nc.kubes["cluster-1"], nc.kubes["cluster-2"]
    await one.delete(kube.SERVICE_EXPORTS, ns, "hello-cluster-1")

    async def withdrawn() -> bool:
        return await two.get(kube.SERVICE_IMPORTS, ns, "hello-cluster-1") is None

    await until(withdrawn, timeout=90)
    fqdn = f"hello-cluster-1.{ns}.svc.clusterset.local"
    out = await run_pod(
        nc,
        "cluster-2",
        ns,
        "client-after",
        f"for i in $(seq 30); do s=$(dig {fqdn} | grep -o 'status: [A-Z]*'); "
        f'[ "$s" = "status: NXDOMAIN" ] && break; sleep 1; done; echo $s',
    )
    assert out == "status: NXDOMAIN", out
    # cluster-2's own export is still imported by cluster-1.
    assert await one.get(kube.SERVICE_IMPORTS, ns, "hello-cluster-2") is not None
