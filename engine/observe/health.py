"""The health and metrics endpoint of a publisher, subscriber or member pod.

``/healthz`` answers 200 while every task of the process is running, ``/readyz`` once the
components have bootstrapped (the subscriber: caught up with the log and first full reconcile
done) and NATS is reachable, saying why when it is not, and ``/metrics`` serves the Prometheus
registry.

Its only clients are the kubelet's probes and a Prometheus scraper, each sending one small
``GET`` at a time, so this is a minimal HTTP/1.1 server on asyncio streams: one request per
connection (``Connection: close``), a bounded request head, a deadline for reading it. aiohttp's
server would serve the same three paths for about 1.8 MiB more resident memory in every process
(docs/performance.md §5); mcsync keeps aiohttp for its client side only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_HEAD: Final = 8192
"""Bytes a request line and its headers may take."""
READ_TIMEOUT: Final = 10.0
"""Seconds a client has to send its request head."""

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_TEXT: Final = "text/plain; charset=utf-8"


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
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a request (no I/O: the tests call it directly)."""
        if method not in ("GET", "HEAD"):
            return 405, _TEXT, b"only GET and HEAD\n"
        path = path.split("?", 1)[0]
        if path == "/healthz":
            ok = self.alive()
            return (200, _TEXT, b"ok\n") if ok else (503, _TEXT, b"failing\n")
        if path == "/readyz":
            if self.ready():
                return 200, _TEXT, b"ready\n"
            why = self.why_not_ready() if self.why_not_ready is not None else None
            return 503, _TEXT, (f"not ready: {why}\n" if why else "not ready\n").encode()
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return 404, _TEXT, b"not found\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            method = ""
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                method, path, version = request_line.split(" ")
                if not version.startswith("HTTP/1."):
                    raise ValueError(version)
                status, content_type, body = self.respond(method, path)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return  # the client went away or never asked
            except (asyncio.LimitOverrunError, ValueError, UnicodeDecodeError):
                status, content_type, body = 400, _TEXT, b"bad request\n"
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
            )
            if method != "HEAD":
                writer.write(body)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def start(self) -> int:
        """Start serving; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
