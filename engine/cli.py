"""The ``mcsync`` command line.

Each command is a thin wrapper: it parses options, configures logging, and hands over to the
module that does the work (``runner``, ``localstack``, ``demo``, ``schema``, ``audit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from engine import __version__, options, runtime
from engine.core.errors import ConfigError, SyncError
from engine.observe import logs

app = typer.Typer(
    name="mcsync",
    help="Keep a set of Kubernetes clusters in sync through one replicated event log on NATS "
    "JetStream: Multi-Cluster Services, cluster inventory and cross-cluster leases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
local_app = typer.Typer(help="A whole clusterset on this machine, for trying mcsync out.")
app.add_typer(local_app, name="local")
console = Console(stderr=True)

LogLevelOpt = Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")]
ClustersetNameOpt = Annotated[str, typer.Option(envvar="MCSYNC_CLUSTERSET", help="Clusterset.")]


def _logging(fmt: str, level: str) -> None:
    logs.configure(level, json=None if fmt == "auto" else fmt == "json")


def _run(coro: Coroutine[Any, Any, int | None]) -> None:
    """Run a command's coroutine; SIGINT/SIGTERM cancel it cleanly; errors exit non-zero."""

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
        code = asyncio.run(main())
    except asyncio.CancelledError:
        code = 0
    except KeyboardInterrupt:
        code = 130
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except SyncError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    raise typer.Exit(code or 0)


async def _serve(
    member_opts: options.Member,
    nats: options.Nats,
    *,
    publish: bool,
    subscribe: bool,
    reporter: Any = None,
    subscriber_settings: Any = None,
) -> int:
    from engine import identity, kube, runner
    from engine.observe.health import HealthServer

    api = await kube.load_client(member_opts.kubeconfig)
    try:
        me = await identity.read(kube.Kube(api), member_opts.clusterset)
    finally:
        await api.close()
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
    )
    if reporter is not None:
        member.reporter_settings = reporter
    if subscriber_settings is not None:
        member.subscriber_settings = subscriber_settings
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


def _reporter(member: options.Member, pub: options.Publishing) -> Any:
    """The publisher's membership settings from its options."""
    import base64

    from publishers.membership import ReporterSettings

    ca_file = pub.api_server_ca_file
    return ReporterSettings(
        heartbeat_interval=pub.heartbeat_interval,
        lease=member.lease,
        api_server_url=pub.api_server_url,
        api_server_ca_data=base64.b64encode(ca_file.read_bytes()).decode() if ca_file else None,
    )


def _subscriber_settings(member: options.Member, sub: options.Subscribing) -> Any:
    """The subscriber's settings from its options (checked first)."""
    from subscribers.subscriber import SubscriberSettings

    sub.check()
    return SubscriberSettings(
        inventory_namespace=sub.inventory_namespace,
        lease_namespace=sub.lease_namespace,
        lease_seconds=member.lease,
        staleness_policy=sub.staleness_policy,  # type: ignore[arg-type]
        quiet_seconds=sub.quiet_seconds,
        burst_quiet_seconds=sub.burst_quiet_seconds,
        max_delay_seconds=sub.max_delay_seconds,
    )


@app.command()
@options.grouped("member", options.Member)
@options.grouped("nats", options.Nats)
@options.grouped("pub", options.Publishing)
def publisher(member: options.Member, nats: options.Nats, pub: options.Publishing) -> None:
    """Watch this cluster's ServiceExports, Services, EndpointSlices and ClusterProperties;
    append their events and a heartbeat."""
    _logging(member.log_format, member.log_level)
    reporter = _reporter(member, pub)
    _run(_serve(member, nats, publish=True, subscribe=False, reporter=reporter))


@app.command()
@options.grouped("member", options.Member)
@options.grouped("nats", options.Nats)
@options.grouped("sub", options.Subscribing)
def subscriber(member: options.Member, nats: options.Nats, sub: options.Subscribing) -> None:
    """Follow the log; materialize ServiceImports, derived Services, EndpointSlices,
    ClusterProfiles and ServiceExport conditions."""
    settings = _subscriber_settings(member, sub)
    _logging(member.log_format, member.log_level)
    _run(_serve(member, nats, publish=False, subscribe=True, subscriber_settings=settings))


@app.command("member")
@options.grouped("member", options.Member)
@options.grouped("nats", options.Nats)
@options.grouped("pub", options.Publishing)
@options.grouped("sub", options.Subscribing)
def member_command(
    member: options.Member,
    nats: options.Nats,
    pub: options.Publishing,
    sub: options.Subscribing,
) -> None:
    """Run this cluster's publisher and subscriber in one process: one NATS connection, one
    API client, one health port for both (it takes the options of both commands)."""
    settings = _subscriber_settings(member, sub)
    _logging(member.log_format, member.log_level)
    reporter = _reporter(member, pub)
    _run(
        _serve(
            member,
            nats,
            publish=True,
            subscribe=True,
            reporter=reporter,
            subscriber_settings=settings,
        )
    )


@local_app.command("up")
def local_up(
    clusters: Annotated[int, typer.Option(min=1, max=8, help="How many clusters.")] = 3,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where kubeconfigs, nats.url and ready go.")
    ] = Path("local"),
    clusterset: Annotated[str, typer.Option(help="Clusterset name.")] = "local",
    mcsync: Annotated[
        bool,
        typer.Option("--mcsync/--no-mcsync", help="Run a publisher and subscriber per cluster."),
    ] = True,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Start a nats-server and N control planes; stay up until interrupted."""
    _logging("console", log_level)

    async def up() -> int:
        from engine.localstack import LocalStack

        with console.status(f"starting nats-server and {clusters} control planes..."):
            stack = LocalStack(clusters, directory.resolve(), clusterset, with_mcsync=mcsync)
            await stack.start()
        try:
            assert stack.nats is not None
            console.print(f"[bold green]clusterset {clusterset!r} is up[/]")
            console.print(f"  nats:        {stack.nats.url}  ({directory}/nats.url)")
            for name in stack.names:
                console.print(f"  {name}:  kubeconfig {directory}/{name}.kubeconfig")
            running = "publisher + subscriber per cluster" if mcsync else "not running"
            console.print(f"  mcsync:      {running}")
            console.print("Ctrl-C stops everything.")
            await asyncio.Event().wait()
            return 0
        finally:
            await stack.stop()

    _run(up())


@app.command()
def demo(
    once: Annotated[bool, typer.Option(help="Exit 0 as soon as everything converged.")] = False,
    directory: Annotated[Path, typer.Option("--dir", help="Where kubeconfigs go.")] = Path(
        "local/demo"
    ),
    log_level: LogLevelOpt = "error",
) -> None:
    """Run the local multi-cluster demo: 3 clusters, exports converging live."""
    _logging("console", log_level)
    from engine import demo as demo_mod

    _run(demo_mod.run(directory.resolve(), once, Console()))


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="The docs directory to write into.")] = Path("docs"),
    check: Annotated[bool, typer.Option(help="Only check the files are current.")] = False,
) -> None:
    """Generate the JSON Schemas of the events and the AsyncAPI document of the log."""
    from engine import contract

    if check:
        stale = contract.check(out)
        if stale:
            console.print(f"[red]out of date:[/] {', '.join(stale)}; run `mcsync schema`")
            raise typer.Exit(1)
        console.print("schemas are current")
        return
    for path in contract.write(out):
        console.print(f"wrote {path}")


@app.command()
@options.grouped("nats", options.Nats)
def replay(
    nats: options.Nats,
    clusterset: ClustersetNameOpt = "local",
    since: Annotated[datetime | None, typer.Option(help="From this time (ISO 8601).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Up to this time (ISO 8601).")] = None,
    from_seq: Annotated[int | None, typer.Option(help="From this stream sequence.")] = None,
    to_seq: Annotated[int | None, typer.Option(help="Up to this stream sequence.")] = None,
    cluster: Annotated[str | None, typer.Option(help="Only this cluster's events.")] = None,
    service: Annotated[
        str | None, typer.Option(help="Only events of this service, as namespace/name.")
    ] = None,
    explain: Annotated[
        bool, typer.Option(help="After the events, explain the service's import as of the end.")
    ] = False,
    output: Annotated[str, typer.Option(help="table or json")] = "table",
) -> None:
    """Replay the log for audit: what each cluster said, when, and what it led to."""
    _logging("console", "warning")
    from engine import audit

    _run(
        audit.run(
            nats=nats,
            clusterset=clusterset,
            since=since,
            until=until,
            from_seq=from_seq,
            to_seq=to_seq,
            cluster=cluster,
            service=service,
            explain=explain,
            output=output,
            console=Console(),
        )
    )


@app.command()
@options.grouped("nats", options.Nats)
def status(
    nats: options.Nats,
    clusterset: ClustersetNameOpt = "local",
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            envvar="KUBECONFIG",
            help="Also compare this cluster's ServiceImports with the log (exit 1 if they differ).",
        ),
    ] = None,
    lease: Annotated[
        float, typer.Option(help="Heartbeat lease in seconds, as the subscribers use it.")
    ] = 30.0,
    output: Annotated[str, typer.Option(help="table or json")] = "table",
) -> None:
    """The clusterset at a glance: members and their health, services with their winners and
    conflicts, unusable messages and dead letters, the stream; with --kubeconfig, whether this
    cluster's imports match the log."""
    if output not in ("table", "json"):
        raise typer.BadParameter("--output must be table or json")
    _logging("console", "error")
    from engine import status as status_mod

    _run(
        status_mod.run(
            nats=nats,
            clusterset=clusterset,
            lease_seconds=lease,
            kubeconfig=str(kubeconfig) if kubeconfig else None,
            output=output,
            console=Console(),
        )
    )


stream_app = typer.Typer(help="The clusterset's stream (for the NATS admin).")
app.add_typer(stream_app, name="stream")


@stream_app.command("ensure")
@options.grouped("nats", options.Nats)
def stream_ensure(
    nats: options.Nats,
    clusterset: ClustersetNameOpt = "local",
    replicas: Annotated[int, typer.Option(min=1, max=5, help="JetStream replicas.")] = 1,
    max_age: Annotated[
        float, typer.Option(help="Drop events older than this many seconds (0: keep all).")
    ] = 0,
    duplicate_window: Annotated[
        float, typer.Option(help="Seconds JetStream remembers Nats-Msg-Ids.")
    ] = 120,
) -> None:
    """Create the clusterset's stream and dead-letter stream, or bring their config up to date."""
    from engine import jetstream
    from engine.core import subjects

    _logging("console", "warning")

    async def ensure() -> int:
        nc = await nats.connect("mcsync-admin")
        try:
            await jetstream.EventLog(nc, clusterset).ensure(
                jetstream.StreamSettings(replicas, max_age, duplicate_window)
            )
        finally:
            await nc.close()
        console.print(
            f"stream {subjects.stream_name(clusterset)} and "
            f"{jetstream.dead_letter_stream(clusterset)} are ready"
        )
        return 0

    _run(ensure())


lease_app = typer.Typer(help="Cross-cluster leader leases on the log.")
app.add_typer(lease_app, name="lease")


@lease_app.command(
    "run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
@options.grouped("nats", options.Nats)
def lease_run(
    ctx: typer.Context,
    nats: options.Nats,
    name: Annotated[str, typer.Argument(help="The lease name (one per clusterset).")],
    identity: Annotated[str, typer.Option(help="This candidate's unique identity.")],
    cluster: Annotated[
        str, typer.Option(envvar="MCSYNC_CLUSTER", help="This cluster's id (its lease subject).")
    ],
    clusterset: ClustersetNameOpt = "local",
    duration: Annotated[float, typer.Option(help="Lease duration (s).")] = 15.0,
    renew_deadline: Annotated[float, typer.Option(help="Step down if not renewed by (s).")] = 10.0,
    renew_interval: Annotated[float, typer.Option(help="Renew every (s).")] = 2.0,
    grace: Annotated[float, typer.Option(help="SIGTERM-to-SIGKILL grace period (s).")] = 10.0,
    create_stream: Annotated[
        bool,
        typer.Option(
            "--create-stream/--no-create-stream",
            help="Provision the clusterset's stream if missing (needs stream-admin rights).",
        ),
    ] = True,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run CMD (after --) only while holding lease NAME; stop it when leadership is lost."""
    from engine import leaserun
    from engine.core import leases

    command = list(ctx.args)
    if not command:
        raise typer.BadParameter("give the command after --, e.g. mcsync lease run x -- sleep 9")
    _logging("auto", log_level)
    try:
        timing = leases.Timing(duration, renew_deadline, renew_interval, min(0.5, renew_interval))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _run(
        leaserun.run(
            nats=nats,
            clusterset=clusterset,
            cluster=cluster,
            name=name,
            identity=identity,
            command=command,
            timing=timing,
            grace=grace,
            create_stream=create_stream,
        )
    )


@app.command()
def version() -> None:
    """Print the version."""
    print(f"mcsync {__version__}")


def main() -> None:
    app()
