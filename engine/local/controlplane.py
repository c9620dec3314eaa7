"""Local Kubernetes control planes: one etcd, N real kube-apiservers, one per simulated cluster.

No registry ships ``kube-apiserver``, so :func:`ensure_binaries` builds it and etcd from the Go
module proxy into a versioned cache outside any repository, once; later calls reuse the build.
:class:`LocalClusters` then starts one etcd on tmpfs and one apiserver per cluster, each with
its own ``--etcd-prefix``, serving port, self-signed serving certificate, static admin token,
service-account key and service IP range, with RBAC on. It waits until each serves, writes a
kubeconfig per cluster, and stops everything on exit.

There is no kube-controller-manager: namespaces never finish deleting and nothing is
garbage-collected, so mcsync deletes what it owns itself. :mod:`engine.local.nodes` adds a real
node to each cluster (then the apiservers listen on the host ends of the nodes' links,
``bind_addresses``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import yaml

from engine.core.errors import ConfigError
from engine.local import procs

K8S_VERSION = os.environ.get("MCSYNC_K8S_VERSION", "v1.36.3")
ETCD_VERSION = os.environ.get("MCSYNC_ETCD_VERSION", "v3.6.16")
BINARIES = ("kube-apiserver", "etcd")
"""What a control plane runs (the build script makes kube-controller-manager, helm on request)."""


def cache_root() -> Path:
    if "MCSYNC_CACHE_DIR" in os.environ:
        return Path(os.environ["MCSYNC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mcsync"


def bin_dir() -> Path:
    """Where the binaries are: ``MCSYNC_K8S_BIN`` or the versioned build cache."""
    if "MCSYNC_K8S_BIN" in os.environ:
        return Path(os.environ["MCSYNC_K8S_BIN"])
    return cache_root() / "control-plane" / f"k8s-{K8S_VERSION}-etcd-{ETCD_VERSION}" / "bin"


def have_binaries() -> bool:
    d = bin_dir()
    return all(os.access(d / b, os.X_OK) for b in BINARIES)


def ensure_binaries(quiet: bool = False) -> Path:
    """Return the binaries' directory, building them first if they are not there."""
    if have_binaries():
        return bin_dir()
    if "MCSYNC_K8S_BIN" in os.environ:
        raise ConfigError(f"MCSYNC_K8S_BIN={bin_dir()} lacks one of {', '.join(BINARIES)}")
    if shutil.which("go") is None:
        raise ConfigError(
            "kube-apiserver and etcd are not built yet, and building them needs Go (>= 1.26), "
            "which is not on PATH. Install Go, or set MCSYNC_K8S_BIN to a directory holding "
            "kube-apiserver and etcd."
        )
    returncode = run_build_script(list(BINARIES), quiet)
    if returncode != 0 or not have_binaries():
        raise ConfigError(f"building the control plane failed (exit {returncode})")
    return bin_dir()


def run_build_script(parts: list[str], quiet: bool = False) -> int:
    """Run the build script for ``parts`` (names as it takes them); its exit status. Its
    progress lines go to stderr unless ``quiet``."""
    script = resources.files("engine.local") / "scripts" / "build-control-plane.sh"
    with resources.as_file(script) as path:
        result = subprocess.run(
            ["bash", str(path), *parts],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if quiet else None,
            text=True,
            check=False,
        )
    return result.returncode


@dataclass
class Cluster:
    """One running simulated cluster: its apiserver, credentials and kubeconfig."""

    name: str
    port: int
    token: str
    ca_file: Path
    kubeconfig_path: Path
    log_path: Path
    etcd_prefix: str
    proc: subprocess.Popen[bytes] | None = None
    address: str = "127.0.0.1"
    """Where the apiserver listens: loopback, or the host end of its node's link."""

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.port}"

    def kubeconfig(self) -> dict[str, Any]:
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {"server": self.server, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": f"{self.name}-admin", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": self.name,
                    "context": {"cluster": self.name, "user": f"{self.name}-admin"},
                }
            ],
            "current-context": self.name,
        }

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Kill the apiserver at once (a fault, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _ssl_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@dataclass
class LocalClusters:
    """etcd plus N kube-apiservers. ``async with LocalClusters(names) as lc: lc.clusters``."""

    names: list[str]
    base_dir: Path | None = None
    kubeconfig_dir: Path | None = None
    service_cidrs: list[str] | None = None
    bind_addresses: list[str] | None = None
    """One address per cluster to serve on instead of 127.0.0.1 (local nodes reach their
    cluster's apiserver at the host end of their link, :mod:`engine.local.netns`)."""
    start_concurrency: int = 2
    clusters: list[Cluster] = field(default_factory=list)
    _etcd: subprocess.Popen[bytes] | None = None
    _etcd_port: int = 0
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def __getitem__(self, name: str) -> Cluster:
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(name)

    def merged_kubeconfig(self) -> dict[str, Any]:
        """One kubeconfig with a context per cluster (named like the cluster), for tools that
        take several clusters as contexts of one file (kubectl --context, the MCS conformance
        suite's -contexts)."""
        merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config"}
        for key in ("clusters", "users", "contexts"):
            merged[key] = [item for c in self.clusters for item in c.kubeconfig()[key]]
        merged["current-context"] = self.clusters[0].name if self.clusters else ""
        return merged

    async def __aenter__(self) -> LocalClusters:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def start(self) -> None:
        bins = await asyncio.to_thread(ensure_binaries)
        if self.base_dir is None:
            shm = Path("/dev/shm")
            self._tmp = tempfile.TemporaryDirectory(
                prefix="mcsync-cp-", dir=str(shm) if shm.is_dir() else None
            )
            self.base_dir = Path(self._tmp.name)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        kdir = self.kubeconfig_dir or self.base_dir
        kdir.mkdir(parents=True, exist_ok=True)
        await self._start_etcd(bins)
        sa_key = self.base_dir / "sa.key"
        subprocess.run(
            ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(sa_key)],
            check=True,
            capture_output=True,
        )
        sem = asyncio.Semaphore(self.start_concurrency)
        for i, name in enumerate(self.names):
            token = secrets.token_hex(24)
            cdir = self.base_dir / name
            cdir.mkdir(exist_ok=True)
            self.clusters.append(
                Cluster(
                    name=name,
                    port=procs.free_port(),
                    token=token,
                    ca_file=cdir / "apiserver.crt",
                    kubeconfig_path=kdir / f"{name}.kubeconfig",
                    log_path=cdir / "kube-apiserver.log",
                    etcd_prefix=f"/{name}-{uuid.uuid4().hex[:8]}/registry",
                    address=self.bind_addresses[i] if self.bind_addresses else "127.0.0.1",
                )
            )
            (cdir / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')

        async def boot(c: Cluster, cidr: str) -> None:
            async with sem:
                await self._start_apiserver(bins, c, sa_key, cidr)

        cidrs = self.service_cidrs or [f"10.{96 + i}.0.0/16" for i in range(len(self.names))]
        await asyncio.gather(*(boot(c, cidrs[i]) for i, c in enumerate(self.clusters)))

    async def _start_etcd(self, bins: Path) -> None:
        assert self.base_dir is not None
        self._etcd_port = procs.free_port()
        peer = procs.free_port()
        log = self.base_dir / "etcd.log"
        self._etcd = procs.spawn(
            [
                str(bins / "etcd"),
                "--name=mcsync",
                f"--data-dir={self.base_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self._etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self._etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=mcsync=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ],
            log,
        )
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                if self._etcd.poll() is not None:
                    raise ConfigError(f"etcd exited during start:\n{procs.tail(log)}")
                try:
                    async with s.get(f"http://127.0.0.1:{self._etcd_port}/health") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise ConfigError(f"etcd not healthy after 60s:\n{procs.tail(log)}")

    async def _start_apiserver(self, bins: Path, c: Cluster, sa_key: Path, cidr: str) -> None:
        cdir = c.ca_file.parent
        c.proc = procs.spawn(
            [
                str(bins / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self._etcd_port}",
                f"--etcd-prefix={c.etcd_prefix}",
                "--etcd-compaction-interval=0",
                f"--bind-address={c.address}",
                f"--advertise-address={c.address}",
                f"--secure-port={c.port}",
                f"--cert-dir={cdir}",
                f"--token-auth-file={cdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                f"--service-cluster-ip-range={cidr}",
                "--allow-privileged=true",
                "--kubelet-preferred-address-types=InternalIP",
                # Without nodes: no `kubernetes` endpoints, and no ServiceAccount admission
                # (nothing would create the `default` ServiceAccounts it requires). With nodes,
                # pods use in-cluster configuration: the apiserver publishes its host address
                # as the `kubernetes` endpoints, and the nodes' controller manager creates the
                # ServiceAccounts and the root CA ConfigMaps.
                *(
                    ["--endpoint-reconciler-type=lease"]
                    if self.bind_addresses
                    else [
                        "--endpoint-reconciler-type=none",
                        "--disable-admission-plugins=ServiceAccount",
                    ]
                ),
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ],
            c.log_path,
        )
        await self._wait_ready(c)
        c.kubeconfig_path.write_text(yaml.safe_dump(c.kubeconfig(), sort_keys=False))
        c.kubeconfig_path.chmod(0o600)

    async def _wait_ready(self, c: Cluster, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not c.ca_file.exists():
            if c.proc is None or c.proc.poll() is not None:
                raise ConfigError(f"kube-apiserver {c.name} exited:\n{procs.tail(c.log_path)}")
            if time.monotonic() > deadline:
                raise ConfigError(f"kube-apiserver {c.name} wrote no certificate in {timeout}s")
            await asyncio.sleep(0.1)
        ctx = _ssl_context(c.ca_file)
        headers = {"Authorization": f"Bearer {c.token}"}
        async with aiohttp.ClientSession(headers=headers) as s:
            for path in ("/readyz", "/api/v1/namespaces/default"):
                while True:
                    if c.proc is None or c.proc.poll() is not None:
                        raise ConfigError(
                            f"kube-apiserver {c.name} exited:\n{procs.tail(c.log_path)}"
                        )
                    try:
                        async with s.get(c.server + path, ssl=ctx) as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline:
                        raise ConfigError(
                            f"kube-apiserver {c.name} not ready in {timeout}s:\n"
                            f"{procs.tail(c.log_path)}"
                        )
                    await asyncio.sleep(0.2)

    async def restart(self, name: str) -> None:
        """Start a stopped or killed apiserver again, on the same port and prefix."""
        c = self[name]
        c.kill()
        assert self.base_dir is not None
        bins = bin_dir()
        idx = self.clusters.index(c)
        cidrs = self.service_cidrs or [f"10.{96 + i}.0.0/16" for i in range(len(self.names))]
        await self._start_apiserver(bins, c, self.base_dir / "sa.key", cidrs[idx])

    def stop(self) -> None:
        for c in self.clusters:
            if c.proc is not None:
                procs.stop(c.proc, grace=15.0)
        if self._etcd is not None:
            procs.stop(self._etcd, grace=10.0)
            self._etcd = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
