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

from engine import __version__, logs, runtime
from engine.errors import ConfigError, SyncError

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

ClustersetOpt = Annotated[
    str | None,
    typer.Option(
        envvar="MCSYNC_CLUSTERSET",
        help="Clusterset name; must match this cluster's clusterset.k8s.io ClusterProperty "
        "(read from it when omitted).",
    ),
]
NatsUrlOpt = Annotated[
    str, typer.Option(envvar="MCSYNC_NATS_URL", help="NATS server URL(s), comma-separated.")
]
NatsCredsOpt = Annotated[
    Path | None,
    typer.Option(envvar="MCSYNC_NATS_CREDS", help="NATS credentials file (JWT + nkey seed)."),
]
NatsUserOpt = Annotated[str | None, typer.Option(envvar="MCSYNC_NATS_USER", help="NATS user.")]
NatsPasswordFileOpt = Annotated[
    Path | None,
    typer.Option(envvar="MCSYNC_NATS_PASSWORD_FILE", help="File holding the NATS password."),
]
KubeconfigOpt = Annotated[
    Path | None,
    typer.Option(envvar="KUBECONFIG", help="kubeconfig file; in-cluster config when omitted."),
]
HealthPortOpt = Annotated[
    int, typer.Option(help="Port of /healthz, /readyz and /metrics (0: any free port).")
]
LogFormatOpt = Annotated[str, typer.Option(help="Log format: json, console or auto.")]
LogLevelOpt = Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")]
CreateStreamOpt = Annotated[
    bool,
    typer.Option(
        "--create-stream/--no-create-stream",
        help="Provision the clusterset's stream if missing (needs stream-admin rights).",
    ),
]


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


def _password(path: Path | None) -> str | None:
    return path.read_text().strip() if path is not None else None


LeaseOpt = Annotated[
    float,
    typer.Option(
        "--staleness-lease",
        "--lease",
        help="Heartbeat lease in seconds: a member silent this long is Unknown and handled by "
        "the staleness policy (use the same value for every publisher and subscriber).",
    ),
]


async def _serve(
    *,
    publish: bool,
    subscribe: bool,
    clusterset: str | None,
    nats_url: str,
    nats_creds: Path | None,
    nats_user: str | None,
    nats_password_file: Path | None,
    kubeconfig: Path | None,
    health_port: int,
    create_stream: bool,
    reporter: Any = None,
    subscriber_settings: Any = None,
) -> int:
    from engine import identity, kube, runner
    from engine.health import HealthServer

    api = await kube.load_client(kubeconfig)
    try:
        me = await identity.read(kube.Kube(api), clusterset)
    finally:
        await api.close()
    log = logs.get("mcsync").bind(cluster=me.cluster, clusterset=me.clusterset)
    member = runner.Member(
        cluster=me.cluster,
        clusterset=me.clusterset,
        kubeconfig=kubeconfig,
        nats_url=nats_url,
        publish=publish,
        subscribe=subscribe,
        nats_credentials=str(nats_creds) if nats_creds else None,
        nats_user=nats_user,
        nats_password=_password(nats_password_file),
        create_stream=create_stream,
    )
    if reporter is not None:
        member.reporter_settings = reporter
    if subscriber_settings is not None:
        member.subscriber_settings = subscriber_settings
    health = HealthServer(member.metrics.registry, member.alive, member.is_ready, port=health_port)
    port = await health.start()
    log.info("mcsync.starting", publisher=publish, subscriber=subscribe, health_port=port)
    try:
        await member.start()
        await member.wait()
        return 1
    finally:
        await member.stop()
        await health.stop()


@app.command()
def publisher(
    nats_url: NatsUrlOpt = "nats://127.0.0.1:4222",
    clusterset: ClustersetOpt = None,
    nats_creds: NatsCredsOpt = None,
    nats_user: NatsUserOpt = None,
    nats_password_file: NatsPasswordFileOpt = None,
    kubeconfig: KubeconfigOpt = None,
    health_port: HealthPortOpt = 8080,
    create_stream: CreateStreamOpt = True,
    heartbeat_interval: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 10.0,
    lease: LeaseOpt = 30.0,
    api_server_url: Annotated[
        str | None,
        typer.Option(help="This cluster's API server URL, advertised in ClusterProfiles."),
    ] = None,
    api_server_ca_file: Annotated[
        Path | None, typer.Option(help="PEM file of that API server's CA.")
    ] = None,
    log_format: LogFormatOpt = "auto",
    log_level: LogLevelOpt = "info",
) -> None:
    """Watch this cluster's ServiceExports, Services, EndpointSlices and ClusterProperties;
    append their events and a heartbeat."""
    import base64

    from publishers.membership import ReporterSettings

    _logging(log_format, log_level)
    ca = base64.b64encode(api_server_ca_file.read_bytes()).decode() if api_server_ca_file else None
    reporter = ReporterSettings(
        heartbeat_interval=heartbeat_interval,
        lease=lease,
        api_server_url=api_server_url,
        api_server_ca_data=ca,
    )
    _run(
        _serve(
            publish=True,
            subscribe=False,
            clusterset=clusterset,
            nats_url=nats_url,
            nats_creds=nats_creds,
            nats_user=nats_user,
            nats_password_file=nats_password_file,
            kubeconfig=kubeconfig,
            health_port=health_port,
            create_stream=create_stream,
            reporter=reporter,
        )
    )


@app.command()
def subscriber(
    nats_url: NatsUrlOpt = "nats://127.0.0.1:4222",
    clusterset: ClustersetOpt = None,
    nats_creds: NatsCredsOpt = None,
    nats_user: NatsUserOpt = None,
    nats_password_file: NatsPasswordFileOpt = None,
    kubeconfig: KubeconfigOpt = None,
    health_port: HealthPortOpt = 8080,
    create_stream: CreateStreamOpt = True,
    inventory_namespace: Annotated[
        str, typer.Option(help="Namespace of the ClusterProfiles (written once it exists).")
    ] = "mcsync-system",
    lease_namespace: Annotated[
        str, typer.Option(help="Namespace of the Leases that show cross-cluster leases.")
    ] = "mcsync-system",
    lease: LeaseOpt = 30.0,
    staleness_policy: Annotated[
        str,
        typer.Option(
            help="withdraw: a stale member's endpoints leave every import until it returns; "
            "keep: they stay."
        ),
    ] = "withdraw",
    quiet_seconds: Annotated[
        float,
        typer.Option(
            help="A changed service is reconciled once its events pause this long (seconds)."
        ),
    ] = 0.05,
    burst_quiet_seconds: Annotated[
        float,
        typer.Option(help="The pause that ends a burst of changes to one service (seconds)."),
    ] = 0.25,
    max_delay_seconds: Annotated[
        float,
        typer.Option(help="A changed service waits at most this long, burst or not (seconds)."),
    ] = 1.0,
    log_format: LogFormatOpt = "auto",
    log_level: LogLevelOpt = "info",
) -> None:
    """Follow the log; materialize ServiceImports, derived Services, EndpointSlices,
    ClusterProfiles and ServiceExport conditions."""
    from subscribers.subscriber import SubscriberSettings

    if staleness_policy not in ("withdraw", "keep"):
        raise typer.BadParameter("--staleness-policy must be withdraw or keep")
    if not 0 <= quiet_seconds <= burst_quiet_seconds <= max_delay_seconds:
        raise typer.BadParameter(
            "need 0 <= --quiet-seconds <= --burst-quiet-seconds <= --max-delay-seconds"
        )
    _logging(log_format, log_level)
    settings = SubscriberSettings(
        inventory_namespace=inventory_namespace,
        lease_namespace=lease_namespace,
        lease_seconds=lease,
        staleness_policy=staleness_policy,  # type: ignore[arg-type]
        quiet_seconds=quiet_seconds,
        burst_quiet_seconds=burst_quiet_seconds,
        max_delay_seconds=max_delay_seconds,
    )
    _run(
        _serve(
            publish=False,
            subscribe=True,
            clusterset=clusterset,
            nats_url=nats_url,
            nats_creds=nats_creds,
            nats_user=nats_user,
            nats_password_file=nats_password_file,
            kubeconfig=kubeconfig,
            health_port=health_port,
            create_stream=create_stream,
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
    from engine import schema as schema_mod

    if check:
        stale = schema_mod.check(out)
        if stale:
            console.print(f"[red]out of date:[/] {', '.join(stale)}; run `mcsync schema`")
            raise typer.Exit(1)
        console.print("schemas are current")
        return
    for path in schema_mod.write(out):
        console.print(f"wrote {path}")


@app.command()
def replay(
    nats_url: NatsUrlOpt = "nats://127.0.0.1:4222",
    clusterset: Annotated[
        str, typer.Option(envvar="MCSYNC_CLUSTERSET", help="Clusterset.")
    ] = "local",
    nats_creds: NatsCredsOpt = None,
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
            nats_url=nats_url,
            clusterset=clusterset,
            credentials=str(nats_creds) if nats_creds else None,
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


stream_app = typer.Typer(help="The clusterset's stream (for the NATS admin).")
app.add_typer(stream_app, name="stream")


@stream_app.command("ensure")
def stream_ensure(
    nats_url: NatsUrlOpt = "nats://127.0.0.1:4222",
    clusterset: Annotated[
        str, typer.Option(envvar="MCSYNC_CLUSTERSET", help="Clusterset.")
    ] = "local",
    nats_creds: NatsCredsOpt = None,
    nats_user: NatsUserOpt = None,
    nats_password_file: NatsPasswordFileOpt = None,
    replicas: Annotated[int, typer.Option(min=1, max=5, help="JetStream replicas.")] = 1,
    max_age: Annotated[
        float, typer.Option(help="Drop events older than this many seconds (0: keep all).")
    ] = 0,
    duplicate_window: Annotated[
        float, typer.Option(help="Seconds JetStream remembers Nats-Msg-Ids.")
    ] = 120,
) -> None:
    """Create the clusterset's stream and dead-letter stream, or bring their config up to date."""
    from engine import eventlog, subjects

    _logging("console", "warning")

    async def ensure() -> int:
        nc = await eventlog.connect(
            nats_url,
            name="mcsync-admin",
            credentials=str(nats_creds) if nats_creds else None,
            user=nats_user,
            password=_password(nats_password_file),
        )
        try:
            await eventlog.EventLog(nc, clusterset).ensure(
                eventlog.StreamSettings(replicas, max_age, duplicate_window)
            )
        finally:
            await nc.close()
        console.print(
            f"stream {subjects.stream_name(clusterset)} and "
            f"{eventlog.dead_letter_stream(clusterset)} are ready"
        )
        return 0

    _run(ensure())


lease_app = typer.Typer(help="Cross-cluster leader leases on the log.")
app.add_typer(lease_app, name="lease")


@lease_app.command(
    "run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def lease_run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The lease name (one per clusterset).")],
    identity: Annotated[str, typer.Option(help="This candidate's unique identity.")],
    cluster: Annotated[
        str, typer.Option(envvar="MCSYNC_CLUSTER", help="This cluster's id (its lease subject).")
    ],
    nats_url: NatsUrlOpt = "nats://127.0.0.1:4222",
    clusterset: Annotated[
        str, typer.Option(envvar="MCSYNC_CLUSTERSET", help="Clusterset.")
    ] = "local",
    nats_creds: NatsCredsOpt = None,
    duration: Annotated[float, typer.Option(help="Lease duration (s).")] = 15.0,
    renew_deadline: Annotated[float, typer.Option(help="Step down if not renewed by (s).")] = 10.0,
    renew_interval: Annotated[float, typer.Option(help="Renew every (s).")] = 2.0,
    grace: Annotated[float, typer.Option(help="SIGTERM-to-SIGKILL grace period (s).")] = 10.0,
    create_stream: CreateStreamOpt = True,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run CMD (after --) only while holding lease NAME; stop it when leadership is lost."""
    from engine import leaserun, leases

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
            nats_url=nats_url,
            credentials=str(nats_creds) if nats_creds else None,
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
