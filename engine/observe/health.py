"""The health and metrics endpoint of a publisher or subscriber pod.

``/healthz`` answers 200 while every task of the process is running, ``/readyz`` once the
components have bootstrapped (the subscriber: caught up with the log and first full reconcile
done) and NATS is reachable, saying why when it is not, and ``/metrics`` serves the Prometheus
registry.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        host: str = "0.0.0.0",  # a pod serves its probes on all interfaces
        port: int = 8080,
        why_not_ready: Callable[[], str | None] | None = None,
    ) -> None:
        self.registry = registry
        self.alive = alive
        self.ready = ready
        self.why_not_ready = why_not_ready
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = self.alive()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "failing\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return web.Response(status=200, text="ready\n")
        why = self.why_not_ready() if self.why_not_ready is not None else None
        return web.Response(status=503, text=f"not ready: {why}\n" if why else "not ready\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> int:
        """Start serving; returns the bound port (useful with port 0)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
