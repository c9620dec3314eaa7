"""The long-running commands: ``mcsync publisher``, ``subscriber`` and ``member``.

A pod runs one of these for weeks, so what the process loads at start it keeps: they start
through :func:`main`, which parses the shared option groups (``engine/options.py``) with
argparse and never loads the interactive CLI's toolkit. Typer builds a pydantic validator for
every option, and typer, click, pydantic and rich (which structlog also loads when it can, for
tracebacks on a terminal) were about 15 MiB of the 65 MiB an idle process held and 0.7 s of its
start (docs/performance.md §5). ``mcsync <command> --help`` still goes to the Typer CLI, which
declares the same commands from the same option groups and runs them through here too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine import options, runtime
from engine.core.errors import ConfigError, SyncError, TransientError

if TYPE_CHECKING:
    from engine.identity import Identity
    from publishers.membership import ReporterSettings
    from subscribers.subscriber import SubscriberSettings


@dataclass(frozen=True)
class Command:
    """One long-running command: what it runs and which option groups it takes."""

    help: str
    publish: bool
    subscribe: bool

    @property
    def groups(self) -> list[type[Any]]:
        own: list[type[Any]] = []
        if self.publish:
            own.append(options.Publishing)
        if self.subscribe:
            own.append(options.Subscribing)
        return [options.Member, options.Nats, *own]


COMMANDS = {
    "publisher": Command(
        "Watch this cluster's ServiceExports, Services, EndpointSlices and ClusterProperties; "
        "append their events and a heartbeat.",
        publish=True,
        subscribe=False,
    ),
    "subscriber": Command(
        "Follow the log; materialize ServiceImports, derived Services, EndpointSlices, "
        "ClusterProfiles and ServiceExport conditions.",
        publish=False,
        subscribe=True,
    ),
    "member": Command(
        "Run this cluster's publisher and subscriber in one process: one NATS connection, one "
        "API client, one health port for both (it takes the options of both commands).",
        publish=True,
        subscribe=True,
    ),
}


def without_rich() -> None:
    """Keep structlog from loading rich (and pygments) for tracebacks on a terminal.

    structlog imports rich when it is installed, and it is (the CLI's tables need it); a
    server process renders JSON in its pod, and on a terminal structlog's plain tracebacks
    serve as well. Marking the package absent before structlog is imported saves about 4.5 MiB
    of resident memory (docs/performance.md §5). A process that already loaded rich keeps it.
    """
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]


def main(command: str, argv: Sequence[str]) -> None:
    """Run ``command`` with ``argv`` (its options); exits with the command's status."""
    spec = COMMANDS[command]
    ap = options.parser(f"mcsync {command}", spec.help, spec.groups)
    member, nats, *own = options.parse(ap, spec.groups, argv)
    pub = own.pop(0) if spec.publish else None
    sub = own.pop(0) if spec.subscribe else None
    without_rich()
    sys.exit(start(command, member, nats, pub, sub, report=_stderr))


def _stderr(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def start(
    command: str,
    member: options.Member,
    nats: options.Nats,
    pub: options.Publishing | None,
    sub: options.Subscribing | None,
    report: Callable[[str], None],
) -> int:
    """Configure logging and run the command until it stops; its exit status."""
    from engine.observe import logs

    spec = COMMANDS[command]
    logs.configure(
        member.log_level, json=None if member.log_format == "auto" else member.log_format == "json"
    )
    return run(
        serve(
            member,
            nats,
            reporter=reporter_settings(member, pub) if pub is not None else None,
            subscriber=subscriber_settings(member, sub) if sub is not None else None,
            publish=spec.publish,
            subscribe=spec.subscribe,
        ),
        report,
    )


def reporter_settings(member: options.Member, pub: options.Publishing) -> ReporterSettings:
    """The publisher's membership settings from its options."""
    from publishers.membership import ReporterSettings

    ca_file = pub.api_server_ca_file
    return ReporterSettings(
        heartbeat_interval=pub.heartbeat_interval,
        lease=member.lease,
        api_server_url=pub.api_server_url,
        api_server_ca_data=base64.b64encode(ca_file.read_bytes()).decode() if ca_file else None,
    )


def subscriber_settings(member: options.Member, sub: options.Subscribing) -> SubscriberSettings:
    """The subscriber's settings from its options (checked by the caller)."""
    from subscribers.subscriber import SubscriberSettings

    return SubscriberSettings(
        inventory_namespace=sub.inventory_namespace,
        lease_namespace=sub.lease_namespace,
        lease_seconds=member.lease,
        staleness_policy=sub.staleness_policy,  # type: ignore[arg-type]
        quiet_seconds=sub.quiet_seconds,
        burst_quiet_seconds=sub.burst_quiet_seconds,
        max_delay_seconds=sub.max_delay_seconds,
        state_dir=str(sub.state_dir) if sub.state_dir is not None else None,
    )


def run(coro: Coroutine[Any, Any, int | None], report: Callable[[str], None]) -> int:
    """Run a command's coroutine; SIGINT/SIGTERM cancel it cleanly. Its exit status: 2 after a
    configuration error, 1 after another mcsync error (each reported), 130 on Ctrl-C."""

    async def main() -> int | None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, task.cancel)
        return await coro

    runtime.tune_gc()
    try:
        return asyncio.run(main()) or 0
    except asyncio.CancelledError:
        return 0
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        report(str(exc))
        return 2
    except SyncError as exc:
        report(str(exc))
        return 1


async def wait_for_identity(member_opts: options.Member, max_delay: float = 10.0) -> Identity:
    """This cluster's id and clusterset, read from its API once it answers.

    A pod that has just started may not reach its API yet (the node's proxy has not routed the
    ``kubernetes`` Service's address, or the API is restarting): that is transient, and the
    process waits for it, retrying with backoff, instead of exiting into a restart. A missing or
    invalid ClusterProperty is a configuration error and ends the process as before.
    """
    from engine import identity, kube
    from engine.observe import logs

    log = logs.get("mcsync")
    delay = 0.2
    while True:
        api = await kube.load_client(member_opts.kubeconfig)
        try:
            return await identity.read(kube.Kube(api), member_opts.clusterset)
        except TransientError as exc:
            log.warning("kube.waiting", error=str(exc)[:300], retry_seconds=delay)
        finally:
            await api.close()
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


async def serve(
    member_opts: options.Member,
    nats: options.Nats,
    *,
    publish: bool,
    subscribe: bool,
    reporter: ReporterSettings | None = None,
    subscriber: SubscriberSettings | None = None,
) -> int:
    """Run a cluster's publisher and/or subscriber with their health server until one fails
    for good (a configuration error); the runner restarts them after any other failure."""
    from engine import runner
    from engine.observe import logs
    from engine.observe.health import HealthServer

    me = await wait_for_identity(member_opts)
    log = logs.get("mcsync").bind(cluster=me.cluster, clusterset=me.clusterset)
    member = runner.Member(
        cluster=me.cluster,
        clusterset=me.clusterset,
        kubeconfig=member_opts.kubeconfig,
        nats_url=nats.nats_url,
        publish=publish,
        subscribe=subscribe,
        nats_credentials=nats.credentials,
        nats_user=nats.nats_user,
        nats_password=nats.password,
        nats_tls=nats.tls,
        create_stream=member_opts.create_stream,
        log_layout=member_opts.log_layout,  # type: ignore[arg-type]  # checked by the option
    )
    if reporter is not None:
        member.reporter_settings = reporter
    if subscriber is not None:
        member.subscriber_settings = subscriber
    health = HealthServer(
        member.metrics.registry,
        member.alive,
        member.is_ready,
        port=member_opts.health_port,
        why_not_ready=member.not_ready_because,
    )
    port = await health.start()
    log.info("mcsync.starting", publisher=publish, subscriber=subscribe, health_port=port)
    try:
        await member.start()
        await member.wait()
        return 1
    finally:
        await member.stop()
        await health.stop()
