"""The health endpoint answers probes and scrapes over real sockets, and shrugs off bad clients."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from engine.observe import health


class State:
    alive = True
    ready = False
    why: str | None = "subscriber is starting"


@pytest.fixture
async def server() -> AsyncIterator[tuple[health.HealthServer, State]]:
    registry = CollectorRegistry()
    Counter("mcsync_test_things", "Things", registry=registry).inc(3)
    state = State()
    srv = health.HealthServer(
        registry,
        lambda: state.alive,
        lambda: state.ready,
        host="127.0.0.1",
        port=0,
        why_not_ready=lambda: state.why,
    )
    await srv.start()
    try:
        yield srv, state
    finally:
        await srv.stop()


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return int(r.status), dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def test_probes_say_alive_and_why_not_ready(
    server: tuple[health.HealthServer, State],
) -> None:
    srv, state = server
    assert await asyncio.to_thread(get, srv.port, "/healthz") == (
        200,
        {"Content-Type": "text/plain; charset=utf-8", "Content-Length": "3",
         "Connection": "close"},
        b"ok\n",
    )  # fmt: skip
    status, _, body = await asyncio.to_thread(get, srv.port, "/readyz")
    assert (status, body) == (503, b"not ready: subscriber is starting\n")
    state.ready = True
    assert (await asyncio.to_thread(get, srv.port, "/readyz?verbose"))[0] == 200
    state.alive = False
    status, _, body = await asyncio.to_thread(get, srv.port, "/healthz")
    assert (status, body) == (503, b"failing\n")


async def test_metrics_are_the_registry_in_the_text_format(
    server: tuple[health.HealthServer, State],
) -> None:
    srv, _ = server
    status, headers, body = await asyncio.to_thread(get, srv.port, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert b"mcsync_test_things_total 3.0" in body
    assert int(headers["Content-Length"]) == len(body)


async def test_other_paths_and_methods_are_refused_and_head_has_no_body(
    server: tuple[health.HealthServer, State],
) -> None:
    srv, _ = server
    assert (await asyncio.to_thread(get, srv.port, "/"))[0] == 404
    assert (await asyncio.to_thread(get, srv.port, "/healthz", "POST"))[0] == 405
    status, headers, body = await asyncio.to_thread(get, srv.port, "/healthz", "HEAD")
    assert (status, headers["Content-Length"], body) == (200, "3", b"")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"garbage\r\n\r\n",
        b"GET /healthz SPDY/3\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nX-Long: " + b"a" * (health.MAX_HEAD + 10) + b"\r\n\r\n",
    ],
    ids=["no request line", "not http", "head too large"],
)
async def test_a_malformed_request_gets_400(
    server: tuple[health.HealthServer, State], request_bytes: bytes
) -> None:
    srv, _ = server
    assert (await raw(srv.port, request_bytes)).startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def test_a_silent_client_is_dropped_and_stop_does_not_wait_for_it(
    server: tuple[health.HealthServer, State], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, _ = server
    monkeypatch.setattr(health, "READ_TIMEOUT", 0.2)
    assert await raw(srv.port, b"GET /heal") == b""  # half a request, then nothing
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        await asyncio.sleep(0.05)
        async with asyncio.timeout(5):
            await srv.stop()  # with a connection open and silent
    finally:
        writer.close()
    assert await reader.read() == b""
