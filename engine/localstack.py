"""A whole clusterset on this machine: an embedded nats-server and N local control planes.

``mcsync local up``, ``mcsync demo``, the benchmarks and the end-to-end tests all start the same
stack: one nats-server with JetStream, one etcd and N kube-apiservers, the CRDs, and the About
API identity of each cluster (``cluster.clusterset.k8s.io`` = ``cluster-<i>``,
``clusterset.k8s.io`` = the clusterset name), optionally with a publisher and a subscriber per
cluster. With ``nodes``, each cluster gets a real node too (:mod:`engine.local.nodes`: containerd,
kubelet, kube-proxy, CoreDNS with ``clusterset.local``, pod networks routed between clusters),
which needs root and a minute or so more per cluster; the default stays control planes only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from engine import identity, kube, runner
from engine.local import controlplane, netns, nodes
from engine.local.natsserver import NatsServer


@dataclass
class LocalStack:
    """``async with LocalStack(3, Path("local")) as stack: ...``"""

    clusters: int = 3
    directory: Path | None = None
    clusterset: str = "local"
    with_mcsync: bool = True
    with_nodes: bool = False
    mcsync_image: bool = False
    """With nodes: mcsync's own image on them too, so that its Helm chart runs there."""
    member_options: dict[str, Any] = field(default_factory=dict)
    """Extra :class:`engine.runner.Member` fields for every member (settings, flags)."""
    nats: NatsServer | None = None
    control_planes: controlplane.LocalClusters | None = None
    network: netns.Network | None = None
    local_nodes: nodes.LocalNodes | None = None
    members: dict[str, runner.Member] = field(default_factory=dict)
    kubes: dict[str, kube.Kube] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [f"cluster-{i + 1}" for i in range(self.clusters)]

    def kubeconfig(self, name: str) -> Path:
        assert self.control_planes is not None
        return self.control_planes[name].kubeconfig_path

    async def __aenter__(self) -> LocalStack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / "ready").unlink(missing_ok=True)
        self.nats = NatsServer(
            store_dir=(self.directory / "nats") if self.directory is not None else None
        )
        bind: list[str] | None = None
        if self.with_nodes:
            await asyncio.to_thread(nodes.ensure_parts)
            self.network = netns.Network(self.clusters)
            bind = [n.host_ip for n in await asyncio.to_thread(self.network.create)]
        self.control_planes = controlplane.LocalClusters(
            self.names, kubeconfig_dir=self.directory, bind_addresses=bind
        )
        nats_start = asyncio.create_task(self.nats.__aenter__())
        await self.control_planes.start()
        await nats_start
        if self.directory is not None:
            merged = self.directory / "kubeconfig"
            merged.write_text(
                yaml.safe_dump(self.control_planes.merged_kubeconfig(), sort_keys=False)
            )
            merged.chmod(0o600)
        if self.network is not None:
            self.local_nodes = nodes.LocalNodes(
                self.control_planes, self.network, mcsync_image=self.mcsync_image
            )
            await self.local_nodes.start()
        for name in self.names:
            api = await kube.load_client(self.kubeconfig(name))
            k = kube.Kube(api, field_manager="mcsync-local")
            self.kubes[name] = k
            await kube.install_crds(k)
            await identity.write(k, name, self.clusterset)
            await k.apply(
                kube.NAMESPACES,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mcsync-system"}},
            )
        if self.with_mcsync:
            for name in self.names:
                await self.start_member(name)
            await asyncio.gather(*(m.wait_ready() for m in self.members.values()))
        if self.directory is not None:
            (self.directory / "nats.url").write_text(self.nats.url + "\n")
            (self.directory / "ready").write_text("ready\n")

    async def start_member(self, name: str, **kw: Any) -> runner.Member:
        assert self.nats is not None
        m = runner.Member(
            cluster=name,
            clusterset=self.clusterset,
            kubeconfig=self.kubeconfig(name),
            nats_url=self.nats.url,
            **{**self.member_options, **kw},
        )
        await m.start()
        self.members[name] = m
        return m

    async def stop_member(self, name: str) -> None:
        m = self.members.pop(name, None)
        if m is not None:
            await m.stop()

    async def stop(self) -> None:
        for name in list(self.members):
            await self.stop_member(name)
        for k in self.kubes.values():
            await k.api.close()
        self.kubes.clear()
        if self.local_nodes is not None:
            await asyncio.to_thread(self.local_nodes.stop)
        if self.control_planes is not None:
            self.control_planes.stop()
        if self.network is not None:
            self.network.destroy()
        if self.nats is not None:
            self.nats.cleanup()
        if self.directory is not None:
            (self.directory / "ready").unlink(missing_ok=True)
