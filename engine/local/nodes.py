"""Local nodes: real pods on real kubelets, one node per local cluster.

:class:`LocalNodes` turns each cluster of a :class:`~engine.local.controlplane.LocalClusters`
into a cluster with a node. Every node runs in a network namespace of its own
(:mod:`engine.local.netns`): containerd and runc from Debian's packages, the kubelet and
kube-proxy built from the Go module proxy like kube-apiserver, the CNI bridge plugin with a pod
CIDR per node, CoreDNS serving ``cluster.local`` and ``clusterset.local`` at the node's address,
and the test images made locally (:mod:`engine.local.images`) imported into containerd (with
``mcsync_image``, mcsync's own too). Beside each node, on the host, a kube-controller-manager
runs the few controllers pods, Services and Deployments need, and a kube-scheduler places the
pods that do not name their node (``spec.nodeName``); the node is named ``<cluster>-node``.
docs/nodes.md has what was measured (versions, compatibility, costs).

The node is a test node, not a hardened one: the kubelet serves its API to anyone who reaches
the node's address (only the host can), and the node's components use the cluster's admin
token.

Everything a node makes is torn down by :meth:`LocalNodes.stop`: its containers and their
shims, mounts, cgroups, files and, with the :class:`~engine.local.netns.Network`, its namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from engine.core.errors import ConfigError
from engine.local import controlplane, images, netns, procs

CNI_VERSION = os.environ.get("MCSYNC_CNI_VERSION", "v1.10.0")
COREDNS_VERSION = os.environ.get("MCSYNC_COREDNS_VERSION", "v1.15.0")
NODE_BINARIES = ("kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
PARTS = (*NODE_BINARIES, "cni-plugins", "coredns", "node-rootfs")
"""What the build script makes for nodes (by these names on its command line)."""
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "nsenter")
"""From Debian's packages (containerd, runc, iptables, util-linux); installed, not built."""
CGROUP_V1 = Path("/sys/fs/cgroup")


def node_dir() -> Path:
    return controlplane.cache_root() / "node"


def cni_dir() -> Path:
    return node_dir() / f"cni-plugins-{CNI_VERSION}"


def coredns_binary() -> Path:
    return node_dir() / f"coredns-{COREDNS_VERSION}" / "coredns"


def rootfs_tar() -> Path:
    return node_dir() / images.rootfs_name()


def repo_root() -> Path:
    """The checkout this package runs from (the mcsync image is built from its sources)."""
    return Path(__file__).resolve().parents[2]


def mcsync_image_layers() -> list[Path]:
    return [node_dir() / n for n in images.mcsync_layer_names(repo_root())]


def ensure_mcsync_image(directory: Path, quiet: bool = False) -> Path:
    """mcsync's image from this checkout's sources (the build script's ``mcsync-image`` part:
    its base once per lock, its second layer once per state of the sources), as an OCI
    archive in ``directory`` to import into containerd. The archive holds the base again, so
    it is written for each run rather than kept in the cache for each state of the sources."""
    layers = mcsync_image_layers()
    if not all(p.is_file() for p in layers):
        if not (repo_root() / "uv.lock").is_file():
            raise ConfigError(
                "mcsync's image is built from a checkout of the repository; "
                f"{repo_root()} is not one"
            )
        _build(["mcsync-image"], quiet)
        if not all(p.is_file() for p in layers):
            raise ConfigError(f"building mcsync's image did not make {layers}")
    out = directory / layers[1].name.replace("mcsync-layer-", "mcsync-image-")
    return images.oci_archive(layers, out.with_suffix(".oci.tar"), (images.MCSYNC,))


def _build(parts: list[str], quiet: bool) -> None:
    returncode = controlplane.run_build_script(parts, quiet)
    if returncode != 0:
        raise ConfigError(f"building {' '.join(parts)} failed (exit {returncode})")


def missing_parts() -> list[str]:
    """The parts of a node not built yet (names as the build script takes them)."""
    bins = controlplane.bin_dir()
    have = {
        "cni-plugins": all(os.access(cni_dir() / p, os.X_OK) for p in CNI_PLUGINS),
        "coredns": os.access(coredns_binary(), os.X_OK),
        "node-rootfs": rootfs_tar().is_file(),
    }
    return [p for p in PARTS if not have.get(p, os.access(bins / p, os.X_OK))]


def missing_host_tools() -> list[str]:
    return [t for t in HOST_TOOLS if shutil.which(t) is None]


def ensure_parts(quiet: bool = False) -> None:
    """Build what a node needs and is not built yet; check the tools from Debian's packages."""
    tools = missing_host_tools()
    if tools:
        raise ConfigError(
            f"local nodes need {', '.join(tools)} on PATH (Debian packages containerd, runc, "
            "iptables, util-linux)"
        )
    if os.geteuid() != 0:
        raise ConfigError("local nodes need root (network namespaces, mounts, cgroups)")
    missing = missing_parts()
    if not missing:
        return
    _build(missing, quiet)
    if missing_parts():
        raise ConfigError(f"building the node parts did not make {', '.join(missing_parts())}")


def cgroup_hierarchies(unified: bool = False) -> list[Path]:
    """The cgroup v1 hierarchies mounted under /sys/fs/cgroup (none on a cgroup v2 host); with
    ``unified``, the hybrid layout's cgroup v2 hierarchy too (the kubelet makes its tree there
    as well)."""
    if (CGROUP_V1 / "cgroup.controllers").exists():
        return []
    return [
        p
        for p in sorted(CGROUP_V1.iterdir())
        if p.is_dir() and not p.is_symlink() and (unified or p.name != "unified")
    ]


@dataclass
class Node:
    """One node: its cluster, its links, its directory and its processes."""

    cluster: controlplane.Cluster
    links: netns.NodeLinks
    directory: Path
    cgroup_root: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.cluster.name}-node"

    @property
    def socket(self) -> Path:
        return self.directory / "containerd" / "containerd.sock"

    def log(self, what: str) -> Path:
        return self.directory / f"{what}.log"

    def in_netns(self, *args: str) -> list[str]:
        """``args`` run in the node's network namespace (and the host's mount namespace, which
        the kubelet and containerd must share)."""
        return ["nsenter", f"--net=/var/run/netns/{self.links.netns}", "--", *args]

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
        )


def corefile(kubeconfig: Path, context: str) -> str:
    """The node's CoreDNS configuration: the cluster's names, and ``clusterset.local`` from
    ServiceImports and their EndpointSlices (the ``multicluster`` option, docs/mcs.md). No
    ``forward``: the nodes have no upstream resolver."""
    return f"""\
.:53 {{
    errors
    health 127.0.0.1:8080
    ready 127.0.0.1:8181
    kubernetes cluster.local clusterset.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} {context}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        multicluster clusterset.local
    }}
    loadbalance
}}
"""


@dataclass
class LocalNodes:
    """A node for each cluster of ``control_planes``, on ``network`` (one node per cluster, in
    order). Start the network first, then the control planes with ``bind_addresses`` set to the
    nodes' host ends, then this."""

    control_planes: controlplane.LocalClusters
    network: netns.Network
    base_dir: Path | None = None
    mcsync_image: bool = False
    """Import mcsync's own image too (built from this checkout's sources when they changed),
    so that its Helm chart runs on the nodes."""
    nodes: list[Node] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _mcsync_archive: Path | None = None

    def __getitem__(self, cluster: str) -> Node:
        for n in self.nodes:
            if n.cluster.name == cluster:
                return n
        raise KeyError(cluster)

    async def start(self) -> None:
        await asyncio.to_thread(ensure_parts)
        if self.base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mcsync-nodes-")
            self.base_dir = Path(self._tmp.name)
        archive = await asyncio.to_thread(
            images.oci_archive,
            rootfs_tar(),
            node_dir() / f"images-{rootfs_tar().stem}-{len(images.IMAGES)}.oci.tar",
        )
        # mcsync's image is made (its second layer too, when the sources changed) while the
        # nodes start, and imported into them while they become Ready.
        made: asyncio.Task[Path] | None = None
        if self.mcsync_image:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            made = asyncio.create_task(asyncio.to_thread(ensure_mcsync_image, self.base_dir))
        try:
            for cluster, links in zip(
                self.control_planes.clusters, self.network.nodes, strict=True
            ):
                node = Node(
                    cluster=cluster,
                    links=links,
                    directory=self.base_dir / cluster.name,
                    cgroup_root=f"/mcsync-{self.network.run_id}-{links.index}",
                )
                self.nodes.append(node)
                await self._start_node(node, [archive])
            waits = [self._wait_ready(n) for n in self.nodes]
            if made is not None:
                self._mcsync_archive = await made
                waits += [self._import(n, self._mcsync_archive) for n in self.nodes]
            await asyncio.gather(*waits)
        finally:
            if made is not None and not made.done():
                made.cancel()

    async def _import(self, node: Node, archive: Path) -> None:
        r = await asyncio.to_thread(node.ctr, "images", "import", str(archive), check=False)
        if r.returncode != 0:
            raise ConfigError(f"importing {archive.name} into {node.name} failed: {r.stderr}")

    async def _start_node(self, node: Node, archives: list[Path]) -> None:
        d = node.directory
        for sub in ("containerd", "kubelet", "cni/net.d", "cni/ipam", "volume-plugins", "pod-logs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self._write_configs(node)
        self._make_cgroups(node)
        node.procs["containerd"] = procs.spawn(
            node.in_netns("containerd", "--config", str(d / "containerd.toml")),
            node.log("containerd"),
        )
        if not await asyncio.to_thread(
            procs.wait_until, lambda: node.ctr("version", check=False).returncode == 0, 30
        ):
            log = procs.tail(node.log("containerd"))
            raise ConfigError(f"containerd of {node.name} not up:\n{log}")
        for archive in archives:
            await self._import(node, archive)
        node.procs["kubelet"] = procs.spawn(
            node.in_netns(
                str(controlplane.bin_dir() / "kubelet"),
                f"--config={d / 'kubelet.yaml'}",
                f"--kubeconfig={d / 'kubeconfig'}",
                f"--root-dir={d / 'kubelet'}",
                f"--hostname-override={node.name}",
                f"--node-ip={node.links.node_ip}",
                "--v=1",
            ),
            node.log("kubelet"),
        )
        # The controllers pods and Services need: EndpointSlices for Services with selectors
        # (kube-proxy and mcsync's publisher read them), ServiceAccounts and their CA,
        # Deployments (a Helm chart's pods), StatefulSets (the MCS conformance suite's headless
        # cases name their pods with one), and the node lifecycle, which lifts the not-ready
        # taint the kubelet registers its Node with (the scheduler respects it). On the host,
        # like the apiserver.
        node.procs["kube-controller-manager"] = procs.spawn(
            [
                str(controlplane.bin_dir() / "kube-controller-manager"),
                f"--kubeconfig={d / 'kubeconfig'}",
                "--controllers=endpointslice,serviceaccount,root-ca-cert-publisher,"
                "deployment,replicaset,statefulset,nodelifecycle",
                f"--root-ca-file={node.cluster.ca_file}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
            node.log("kube-controller-manager"),
        )
        # The scheduler places the pods that do not name their node (a Deployment's) on the
        # cluster's one node. On the host; its health endpoint on loopback only.
        node.procs["kube-scheduler"] = procs.spawn(
            [
                str(controlplane.bin_dir() / "kube-scheduler"),
                f"--kubeconfig={d / 'kubeconfig'}",
                f"--authentication-kubeconfig={d / 'kubeconfig'}",
                f"--authorization-kubeconfig={d / 'kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={procs.free_port()}",
                f"--cert-dir={d / 'kube-scheduler'}",
                "--v=1",
            ],
            node.log("kube-scheduler"),
        )
        # The cluster's DNS, in the node's namespace: pods reach it at the node's address.
        node.procs["coredns"] = procs.spawn(
            node.in_netns(str(coredns_binary()), "-conf", str(d / "Corefile")),
            node.log("coredns"),
        )
        # Pods reach the host (their apiserver) from the node's address: the host has no route
        # back to the pod networks.
        await asyncio.to_thread(
            subprocess.run,
            node.in_netns(
                "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", str(netns.POD_SUPERNET),
                "-o", "eth0", "-j", "MASQUERADE",
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        node.procs["kube-proxy"] = procs.spawn(
            node.in_netns(
                str(controlplane.bin_dir() / "kube-proxy"), f"--config={d / 'kube-proxy.yaml'}"
            ),
            node.log("kube-proxy"),
        )

    def _write_configs(self, node: Node) -> None:
        d = node.directory
        state = d / "containerd" / "state"
        (d / "containerd.toml").write_text(
            f"""version = 2
root = "{d / "containerd" / "root"}"
state = "{state}"
[grpc]
  address = "{node.socket}"
[ttrpc]
  address = "{node.socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE}"
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  # Without CAP_SYS_RESOURCE (some sandboxes drop it) runc cannot lower oom_score_adj below
  # its own; the sandbox's -998 would fail every pod. Cap it at containerd's own value.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_dir()}"
    conf_dir = "{d / "cni" / "net.d"}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{state / "runc"}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / "containerd" / "opt"}"
"""
        )
        conflist = {
            "cniVersion": "1.0.0",
            "name": "mcsync",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": node.links.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(d / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (d / "cni" / "net.d" / "10-mcsync.conflist").write_text(json.dumps(conflist, indent=2))
        kubeconfig = node.cluster.kubeconfig()
        (d / "kubeconfig").write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        (d / "kubeconfig").chmod(0o600)
        (d / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        kubelet = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "failSwapOn": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": node.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{node.socket}",
            "address": node.links.node_ip,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDomain": "cluster.local",
            "clusterDNS": [node.links.node_ip],
            "resolvConf": str(d / "resolv.conf"),
            "podCIDR": node.links.pod_cidr,
            "volumePluginDir": str(d / "volume-plugins"),
            # The node's own: the default /var/log/pods is shared by every kubelet on the host,
            # and each one's garbage collection removes the logs of pods it does not know (a
            # pod's log gone before the test read it); it also went with nothing at stop.
            "podLogsDir": str(d / "pod-logs"),
            "registerNode": True,
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "localStorageCapacityIsolation": False,
            "protectKernelDefaults": False,
            "enforceNodeAllocatable": [],
        }
        (d / "kubelet.yaml").write_text(yaml.safe_dump(kubelet, sort_keys=False))
        proxy = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(d / "kubeconfig")},
            "hostnameOverride": node.name,
            "mode": "iptables",
            "clusterCIDR": str(netns.POD_SUPERNET),
            "bindAddress": node.links.node_ip,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # Conntrack sysctls are partly host-wide: leave them alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        (d / "kube-proxy.yaml").write_text(yaml.safe_dump(proxy, sort_keys=False))
        (d / "Corefile").write_text(corefile(d / "kubeconfig", node.cluster.name))

    def _make_cgroups(self, node: Node) -> None:
        """The kubelet wants its cgroup root to exist in every hierarchy."""
        for h in cgroup_hierarchies():
            path = h / node.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            if h.name == "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    with contextlib.suppress(OSError):
                        (path / f).write_text((h / f).read_text())

    async def _wait_ready(self, node: Node, timeout: float = 120.0) -> None:
        """Until the API shows the Node Ready (the kubelet registered, CNI is configured)."""
        c = node.cluster
        ctx = ssl.create_default_context(cafile=str(c.ca_file))
        headers = {"Authorization": f"Bearer {c.token}"}
        deadline = time.monotonic() + timeout
        last = ""
        async with aiohttp.ClientSession(headers=headers) as s:
            while time.monotonic() < deadline:
                for what, p in node.procs.items():
                    if p.poll() is not None:
                        raise ConfigError(
                            f"{what} of {node.name} exited ({p.returncode}):\n"
                            f"{procs.tail(node.log(what))}"
                        )
                try:
                    async with s.get(f"{c.server}/api/v1/nodes/{node.name}", ssl=ctx) as r:
                        if r.status == 200:
                            body = await r.json()
                            conds = {
                                x["type"]: x for x in body.get("status", {}).get("conditions", [])
                            }
                            ready = conds.get("Ready", {})
                            if ready.get("status") == "True":
                                return
                            last = str(ready.get("message", ""))
                except aiohttp.ClientError as e:
                    last = str(e)
                await asyncio.sleep(0.5)
        log = procs.tail(node.log("kubelet"))
        raise ConfigError(f"node {node.name} not Ready after {timeout}s ({last}):\n{log}")

    def stop(self) -> None:
        """Stop every node and remove all it made (containers, shims, mounts, cgroups, files)."""
        for node in reversed(self.nodes):
            self._stop_node(node)
        self.nodes.clear()
        if self._mcsync_archive is not None:
            self._mcsync_archive.unlink(missing_ok=True)
            self._mcsync_archive = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp.name, ignore_errors=True)
            self._tmp = None

    def _stop_node(self, node: Node) -> None:
        for what in (
            "kube-proxy",
            "coredns",
            "kube-scheduler",
            "kube-controller-manager",
            "kubelet",
        ):
            if what in node.procs:
                procs.stop(node.procs.pop(what), grace=10.0)
        if "containerd" in node.procs and node.procs["containerd"].poll() is None:
            self._remove_containers(node)
        if "containerd" in node.procs:
            procs.stop(node.procs.pop("containerd"), grace=10.0)
        self._kill_shims(node)
        _unmount_under(node.directory)
        self._remove_cgroups(node)
        shutil.rmtree(node.directory, ignore_errors=True)

    def _remove_containers(self, node: Node) -> None:
        r = node.ctr("tasks", "ls", "-q", check=False)
        for cid in r.stdout.split():
            node.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        for cid in r.stdout.split():
            node.ctr("tasks", "rm", "-f", cid, check=False)
        r = node.ctr("containers", "ls", "-q", check=False)
        for cid in r.stdout.split():
            node.ctr("containers", "rm", cid, check=False)

    def _kill_shims(self, node: Node) -> None:
        """containerd's shims outlive it by design; end the ones of this node's containerd."""
        marker = str(node.socket).encode()
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                cmdline = (pid_dir / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_dir.name), signal.SIGKILL)

    def _remove_cgroups(self, node: Node) -> None:
        for h in cgroup_hierarchies(unified=True):
            root = h / node.cgroup_root.lstrip("/")
            if not root.exists():
                continue
            dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for p in [*dirs, root]:
                for _ in range(50):
                    try:
                        p.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)


def _unmount_under(directory: Path) -> None:
    """Unmount everything mounted at or below ``directory``, deepest first."""
    prefix = str(directory.resolve())
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        r = subprocess.run(["umount", point], capture_output=True, check=False)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
