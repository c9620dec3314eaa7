"""The wiring of local nodes: a network namespace per node, a router between them, routes.

Each node of a local clusterset lives in a network namespace of its own, so that every
cluster's kube-proxy programs its own rules and every node has its own bridge and addresses.
A node has two links:

- ``eth0``, a veth to the host, on a /30 of its own: the kubelet reaches its cluster's
  kube-apiserver through it (the apiserver listens on the host end), and the apiserver reaches
  the kubelet (logs, exec) at the node end;
- ``eth1``, a veth to a router namespace shared by the nodes of one run, whose routing table
  sends each node's pod CIDR to that node: pods of one cluster reach pods of another by IP, as
  the Multi-Cluster Services API assumes.

Nothing is routed or forwarded in the host's own namespace, and the host's sysctls stay as they
are. Names carry a per-run id, so that runs never collide; :meth:`Network.destroy` removes every
namespace (which removes its veths, host ends included).
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import secrets
import subprocess
from dataclasses import dataclass, field

from engine.core.errors import ConfigError

POD_SUPERNET = ipaddress.IPv4Network("10.244.0.0/16")
"""Every node's pod CIDR is a /24 of this; kube-proxy treats it all as the cluster's pods."""
_LINKS = ipaddress.IPv4Network("10.254.0.0/24")
"""The node-to-router /30s; they exist only inside this run's namespaces."""


def ip(*args: str, netns: str | None = None) -> str:
    """Run ``ip`` (in ``netns`` if given) and return its output; raise on failure."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise ConfigError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r.stdout


def sysctl(netns: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl inside ``netns``."""
    subprocess.run(
        ["ip", "netns", "exec", netns, "sysctl", "-qw", f"{key}={value}"],
        check=True,
        capture_output=True,
    )


def namespaces() -> set[str]:
    """The names of the network namespaces that ``ip netns`` knows."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _host_subnet() -> ipaddress.IPv4Network:
    """A /24 of 172.30.0.0/16 that no host address is in: the host ends of this run's veths."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True)
    used: list[ipaddress.IPv4Network] = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            used.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    candidates = list(ipaddress.IPv4Network("172.30.0.0/16").subnets(new_prefix=24))
    random.shuffle(candidates)
    for c in candidates:
        if not any(c.overlaps(u) for u in used):
            return c
    raise ConfigError("no free /24 in 172.30.0.0/16 for the nodes' host links")


@dataclass(frozen=True)
class NodeLinks:
    """Where one node sits on the network."""

    index: int
    netns: str
    host_ip: str
    """The host end of ``eth0``: the node's cluster's apiserver listens here."""
    node_ip: str
    """The node end of ``eth0``: the kubelet's address, the Node's InternalIP."""
    pod_cidr: str
    gateway: str
    """The bridge address of the pod CIDR (the first address), pods' default gateway."""


@dataclass
class Network:
    """The namespaces and links of one run's nodes. ``Network(2).create()``; ``destroy()``."""

    count: int
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    nodes: list[NodeLinks] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)

    @property
    def router(self) -> str:
        return f"mcs-{self.run_id}-r"

    def create(self) -> list[NodeLinks]:
        if self.count < 1 or self.count > 60:
            raise ConfigError(f"between 1 and 60 nodes, not {self.count}")
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise
        return self.nodes

    def _add_netns(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)
        ip("link", "set", "lo", "up", netns=name)

    def _create(self) -> None:
        host_net = _host_subnet()
        host_links = list(host_net.subnets(new_prefix=30))
        router_links = list(_LINKS.subnets(new_prefix=30))
        self._add_netns(self.router)
        sysctl(self.router, "net.ipv4.ip_forward", "1")
        for i in range(1, self.count + 1):
            ns = f"mcs-{self.run_id}-{i}"
            self._add_netns(ns)
            hl = list(host_links[i - 1].hosts())
            rl = list(router_links[i - 1].hosts())
            pod_cidr = ipaddress.IPv4Network(f"10.244.{i}.0/24")
            gateway = str(next(pod_cidr.hosts()))
            host_end, router_end = f"mh{self.run_id}{i}", f"mr{self.run_id}{i}"
            # eth0: node <-> host
            ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("addr", "add", f"{hl[0]}/30", "dev", host_end)
            ip("link", "set", host_end, "up")
            ip("addr", "add", f"{hl[1]}/30", "dev", "eth0", netns=ns)
            ip("link", "set", "eth0", "up", netns=ns)
            # eth1: node <-> router, the default route; the router knows each pod CIDR
            ip("link", "add", router_end, "netns", self.router, "type", "veth",
               "peer", "name", "eth1", "netns", ns)  # fmt: skip
            ip("addr", "add", f"{rl[0]}/30", "dev", router_end, netns=self.router)
            ip("link", "set", router_end, "up", netns=self.router)
            ip("addr", "add", f"{rl[1]}/30", "dev", "eth1", netns=ns)
            ip("link", "set", "eth1", "up", netns=ns)
            ip("route", "add", "default", "via", str(rl[0]), netns=ns)
            ip("route", "add", str(pod_cidr), "via", str(rl[1]), netns=self.router)
            sysctl(ns, "net.ipv4.ip_forward", "1")
            self.nodes.append(
                NodeLinks(
                    index=i,
                    netns=ns,
                    host_ip=str(hl[0]),
                    node_ip=str(hl[1]),
                    pod_cidr=str(pod_cidr),
                    gateway=gateway,
                )
            )

    def destroy(self) -> None:
        """Delete every namespace this run made (their veths go with them)."""
        # The host ends first: a namespace's links go with it only once nothing holds it.
        for n in self.nodes:
            with contextlib.suppress(ConfigError):
                ip("link", "delete", f"mh{self.run_id}{n.index}")
        for name in reversed(self._made):
            with contextlib.suppress(ConfigError):
                ip("netns", "delete", name)
        self._made.clear()
