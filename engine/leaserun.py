"""``mcsync lease run``: run any command only while holding a cross-cluster lease.

The command starts when leadership is gained and is stopped (SIGTERM, then SIGKILL after a
grace period) as soon as it is lost; it gets the fencing token in ``MCSYNC_LEASE_TOKEN``. If
the command exits on its own, the lease is released and mcsync exits with the command's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from engine import jetstream, leadership, options
from engine.core import leases
from engine.observe import logs

log = logs.get("mcsync.leaserun")


async def run(
    *,
    nats: options.Nats,
    clusterset: str,
    cluster: str,
    name: str,
    identity: str,
    command: list[str],
    timing: leases.Timing,
    grace: float,
    create_stream: bool = True,
) -> int:
    nc = await nats.connect(f"mcsync-lease-{identity}")
    elog = jetstream.EventLog(nc, clusterset)
    if create_stream:
        await elog.ensure()
    else:
        await elog.require_stream()
    child: asyncio.subprocess.Process | None = None
    lost = asyncio.Event()
    exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def gained(token: int) -> None:
        nonlocal child
        lost.clear()
        env = dict(os.environ, MCSYNC_LEASE_TOKEN=str(token), MCSYNC_LEASE_HOLDER=identity)
        child = await asyncio.create_subprocess_exec(*command, env=env)
        log.info("lease.command_started", pid=child.pid, token=token)

        async def reap(p: asyncio.subprocess.Process) -> None:
            code = await p.wait()
            if not lost.is_set() and not exited.done():
                exited.set_result(code)

        asyncio.get_running_loop().create_task(reap(child))

    async def stop_child(token: int) -> None:
        lost.set()
        p = child
        if p is None or p.returncode is not None:
            return
        log.warning("lease.stopping_command", pid=p.pid, token=token)
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(p.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()

    elector = leadership.Elector(
        elog, cluster, name, identity, timing, on_gained=gained, on_lost=stop_child
    )
    task = asyncio.create_task(elector.run())
    try:
        return await exited
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if child is not None and child.returncode is None:
            await stop_child(elector.token or 0)
        await jetstream.close(nc)
