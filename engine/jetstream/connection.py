"""Connections to NATS that never give up, and which NATS failures are worth a retry.

nats-py's default gives up after 60 reconnect attempts and closes the connection for good; an
mcsync process must instead ride out an outage of any length, so every connection here reconnects
forever. :func:`is_transient` is the one place that decides which client errors mean "try again".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from engine.observe import logs

log = logs.get("mcsync.nats")


async def connect(
    servers: str | Sequence[str],
    name: str = "mcsync",
    credentials: str | None = None,
    user: str | None = None,
    password: str | None = None,
    on_state: Callable[[str], None] | None = None,
) -> NATS:
    """Connect with reconnects that never give up."""

    async def error_cb(exc: Exception) -> None:
        log.warning("nats.error", error=repr(exc))

    async def disconnected_cb() -> None:
        log.info("nats.disconnected")
        if on_state:
            on_state("disconnected")

    async def reconnected_cb() -> None:
        log.info("nats.reconnected")
        if on_state:
            on_state("connected")

    kwargs: dict[str, Any] = {}
    if credentials:
        kwargs["user_credentials"] = credentials
    if user:
        kwargs["user"] = user
        kwargs["password"] = password
    return await nats.connect(
        servers=[servers] if isinstance(servers, str) else list(servers),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        pending_size=64 * 1024 * 1024,
        # A connection that went silent (a partition, not a reset) is noticed within ~15 s
        # instead of nats-py's default of about four minutes, and reconnects.
        ping_interval=5,
        max_outstanding_pings=3,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        **kwargs,
    )


async def close(nc: NATS, timeout: float = 5.0) -> None:
    """Close a connection without ever hanging a shutdown (a dead server, pending requests)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await nc.close()


# --- the log -------------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    return isinstance(
        exc,
        nats.errors.TimeoutError
        | nats.errors.NoRespondersError
        | nats.js.errors.NoStreamResponseError
        | nats.errors.ConnectionClosedError
        | nats.errors.ConnectionReconnectingError
        | nats.js.errors.ServiceUnavailableError
        | asyncio.TimeoutError,
    )
