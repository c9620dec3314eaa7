"""Connections to NATS that never give up, and which NATS failures are worth a retry.

nats-py's default gives up after 60 reconnect attempts and closes the connection for good; an
mcsync process must instead ride out an outage of any length, so every connection here reconnects
forever. :func:`is_transient` is the one place that decides which client errors mean "try again".
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from engine.core.errors import ConfigError
from engine.observe import logs

log = logs.get("mcsync.nats")


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS to NATS: the CA that signed the server's certificate, and for mutual TLS this
    client's certificate and key. Files only: secrets are mounted, never passed as values."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """The client's SSL context; a missing or unreadable file is a :class:`ConfigError`."""
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("NATS TLS: give both the client certificate and its key, or neither")
        try:
            ctx = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
            if self.cert_file is not None and self.key_file is not None:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"NATS TLS: cannot load the CA or client certificate: {exc}") from exc
        return ctx


async def connect(
    servers: str | Sequence[str],
    name: str = "mcsync",
    credentials: str | None = None,
    user: str | None = None,
    password: str | None = None,
    on_state: Callable[[str], None] | None = None,
    tls: Tls | None = None,
    inbox_prefix: str | None = None,
) -> NATS:
    """Connect with reconnects that never give up.

    A TLS failure before the first connection (an unknown CA, a refused client certificate)
    is a configuration error and raised at once, instead of being retried forever.
    """
    loop = asyncio.get_running_loop()
    tls_failed: asyncio.Future[BaseException] = loop.create_future()
    connected = False

    async def error_cb(exc: Exception) -> None:
        log.warning("nats.error", error=repr(exc))
        if isinstance(exc, ssl.SSLError) and not connected and not tls_failed.done():
            tls_failed.set_result(exc)

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
    if tls is not None:
        kwargs["tls"] = tls.context()
    if inbox_prefix is not None:
        kwargs["inbox_prefix"] = inbox_prefix
    connecting = asyncio.ensure_future(
        nats.connect(
            servers=_urls(servers),
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            allow_reconnect=True,
            pending_size=64 * 1024 * 1024,
            # A connection that went silent (a partition, not a reset) is noticed within
            # ~15 s instead of nats-py's default of about four minutes, and reconnects.
            ping_interval=5,
            max_outstanding_pings=3,
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
            **kwargs,
        )
    )
    try:
        waiters: set[asyncio.Future[Any]] = {connecting, tls_failed}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        connecting.cancel()
        raise
    failure: BaseException
    if connecting.done():
        try:
            nc = connecting.result()
        except ssl.SSLError as exc:
            failure = exc
        else:
            connected = True
            return nc
    else:
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        failure = tls_failed.result()
    raise ConfigError(
        f"TLS with NATS failed: {failure}. Check --nats-ca-file (the CA that signed the "
        "server's certificate) and, for mutual TLS, --nats-cert-file and --nats-key-file."
    ) from failure


def _urls(servers: str | Sequence[str]) -> list[str]:
    """Server URLs from a list or a comma-separated string (``--nats-url a,b,c``)."""
    if isinstance(servers, str):
        return [u.strip() for u in servers.split(",") if u.strip()]
    return list(servers)


async def close(nc: NATS, timeout: float = 5.0) -> None:
    """Close a connection without ever hanging a shutdown (a dead server, pending requests)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await nc.close()


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
