"""The ``mcsync`` command line.

Each command is a thin wrapper: it parses options, configures logging, and hands over to the
module that does the work (``serve``, ``localstack``, ``demo``, ``schema``, ``audit``). The
long-running commands (publisher, subscriber, member) are declared here for ``--help``, but a
pod starts them through ``engine/serve.py`` without loading this module (``engine/__main__.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from engine import __version__, options, serve
from engine.core.errors import ConfigError
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
    raise typer.Exit(serve.run(coro, _report))


def _report(message: str) -> None:
    console.print(f"[red]error:[/] {message}")


def _start(
    command: str,
    member: options.Member,
    nats: options.Nats,
    pub: options.Publishing | None = None,
    sub: options.Subscribing | None = None,
) -> None:
    raise typer.Exit(serve.start(command, member, nats, pub, sub, report=_report))


@app.command(help=serve.COMMANDS["publisher"].help)
@options.grouped("member", options.Member)
@options.grouped("nats", options.Nats)
@options.grouped("pub", options.Publishing)
def publisher(member: options.Member, nats: options.Nats, pub: options.Publishing) -> None:
    _start("publisher", member, nats, pub=pub)


@app.command(help=serve.COMMANDS["subscriber"].help)
@options.grouped("member", options.Member)
@options.grouped("nats", options.Nats)
@options.grouped("sub", options.Subscribing)
def subscriber(member: options.Member, nats: options.Nats, sub: options.Subscribing) -> None:
    _start("subscriber", member, nats, sub=sub)


@app.command("member", help=serve.COMMANDS["member"].help)
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
    _start("member", member, nats, pub=pub, sub=sub)


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
    with_nodes: Annotated[
        bool,
        typer.Option(
            "--nodes/--no-nodes",
            help="Give each cluster a real node (containerd, kubelet, kube-proxy, CoreDNS) in a "
            "network namespace of its own, pod networks routed between clusters. Needs root and "
            "Debian's containerd, runc and mmdebstrap; builds the node parts once.",
        ),
    ] = False,
    mcsync_image: Annotated[
        bool,
        typer.Option(
            "--mcsync-image/--no-mcsync-image",
            help="With --nodes: build mcsync's image from this checkout the Dockerfile's way "
            "(once per state of the sources) and import it into each node, so that the Helm "
            "chart runs there (docs/nodes.md).",
        ),
    ] = False,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Start a nats-server and N control planes (and nodes); stay up until interrupted."""
    _logging("console", log_level)
    if mcsync_image and not with_nodes:
        raise typer.BadParameter("--mcsync-image needs --nodes")

    async def up() -> int:
        from engine.localstack import LocalStack

        what = f"{clusters} control planes" + (" with a node each" if with_nodes else "")
        with console.status(f"starting nats-server and {what}..."):
            stack = LocalStack(
                clusters,
                directory.resolve(),
                clusterset,
                with_mcsync=mcsync,
                with_nodes=with_nodes,
                mcsync_image=mcsync_image,
            )
            try:
                await stack.start()
            except BaseException:
                # What started before the failure (network namespaces, control planes, nodes)
                # goes too.
                await stack.stop()
                raise
        try:
            assert stack.nats is not None
            console.print(f"[bold green]clusterset {clusterset!r} is up[/]")
            console.print(f"  nats:        {stack.nats.url}  ({directory}/nats.url)")
            for name in stack.names:
                console.print(f"  {name}:  kubeconfig {directory}/{name}.kubeconfig")
            console.print(f"  all:         {directory}/kubeconfig (a context per cluster)")
            if stack.local_nodes is not None:
                for node in stack.local_nodes.nodes:
                    console.print(
                        f"  {node.name}:  pods {node.links.pod_cidr}, DNS {node.links.node_ip}"
                    )
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
    log_layout: Annotated[
        str,
        typer.Option(
            envvar="MCSYNC_LOG_LAYOUT",
            help="hub: read the log itself (the observer, or a hub without accounts per "
            "cluster); mirror or leaf: read --cluster's copy of it with that cluster's login.",
        ),
    ] = "hub",
    cluster: Annotated[
        str | None,
        typer.Option(help="The cluster whose copy of the log to read (mirror and leaf layouts)."),
    ] = None,
) -> None:
    """The clusterset at a glance: members and their health, services with their winners and
    conflicts, unusable messages and dead letters, the stream; with --kubeconfig, whether this
    cluster's imports match the log."""
    if output not in ("table", "json"):
        raise typer.BadParameter("--output must be table or json")
    if log_layout not in ("hub", "mirror", "leaf"):
        raise typer.BadParameter("--log-layout must be hub, mirror or leaf")
    if log_layout != "hub" and not cluster:
        raise typer.BadParameter(
            f"--log-layout {log_layout} reads a cluster's copy: give --cluster"
        )
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
            log_layout=log_layout,
            cluster=cluster,
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
    leaf_sources: Annotated[
        str,
        typer.Option(
            help="Leaf layout, on the hub: comma-separated ids of the clusters whose leaf "
            "outboxes the log sources (each from the JetStream domain named like the cluster)."
        ),
    ] = "",
    leaf: Annotated[
        str | None,
        typer.Option(
            help="Leaf layout, on that cluster's leaf server (as its admin): provision the "
            "cluster's outbox, its mirror of the log and its dead-letter stream."
        ),
    ] = None,
    hub_domain: Annotated[
        str, typer.Option(help="Leaf layout: the JetStream domain of the hub.")
    ] = "hub",
) -> None:
    """Create the clusterset's stream and dead-letter stream, or bring their config up to date.

    With --leaf, provision a leaf server's streams instead. Every run is idempotent.
    """
    from engine import jetstream
    from engine.core import subjects

    _logging("console", "warning")
    settings = jetstream.StreamSettings(replicas, max_age, duplicate_window)
    sources = tuple(c.strip() for c in leaf_sources.split(",") if c.strip())
    for c in (*sources, *([leaf] if leaf else [])):
        subjects.check_label("cluster id", c)
    if leaf and sources:
        raise typer.BadParameter("give --leaf on a leaf server, --leaf-sources on the hub")

    async def ensure() -> int:
        nc = await nats.connect("mcsync-admin")
        try:
            if leaf:
                route = jetstream.Route(clusterset, leaf, "leaf")
                await jetstream.ensure_leaf(nc.jetstream(), route, settings, hub_domain)
                done = f"outbox, mirror and dead-letter stream of cluster {leaf} are ready"
            else:
                await jetstream.ensure_stream(nc.jetstream(), clusterset, settings, sources)
                done = (
                    f"stream {subjects.stream_name(clusterset)} and "
                    f"{jetstream.dead_letter_stream(clusterset)} are ready"
                )
                if sources:
                    done += f"; the log sources the outboxes of {', '.join(sources)}"
        finally:
            await nc.close()
        console.print(done)
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
def credentials(
    token_dir: Annotated[
        Path | None,
        typer.Option(envvar="MCSYNC_TOKEN_DIR", help="One token file per member, named by id."),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(envvar="MCSYNC_TOKEN_FILE", help="One token for every member.")
    ] = None,
) -> None:
    """Exec credential plugin for ClusterProfile consumers: print an ExecCredential holding the
    member's token, read from a file (docs/inventory.md)."""
    from engine import credentials as credentials_mod

    try:
        credentials_mod.run(token_file, token_dir)
    except ConfigError as exc:
        console.print(f"mcsync credentials: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


setup_app = typer.Typer(
    help="One-shot steps that give each process its own credentials (compose.yaml runs them)."
)
app.add_typer(setup_app, name="setup")
OwnerOpt = Annotated[
    str | None,
    typer.Option(help="UID:GID to own the written files (the user the readers run as)."),
]


@setup_app.command("nats-credentials")
def setup_nats_credentials(
    users: Annotated[
        str, typer.Option(help="Comma-separated NATS users (the admin and one per cluster).")
    ],
    out: Annotated[
        Path, typer.Option(help="A random password per user goes to OUT/<user>/password.")
    ],
    hashes: Annotated[
        Path,
        typer.Option(help="File of the users' bcrypt hashes, which the server config includes."),
    ],
    owner: OwnerOpt = None,
) -> None:
    """Generate each NATS user's password (kept when it exists) and the hashes the server
    configuration includes (deploy/compose/nats.conf). No secret is printed."""
    from engine import setup

    async def go() -> int:
        names = [u.strip() for u in users.split(",") if u.strip()]
        who = setup.Owner.parse(owner) if owner else None
        files = setup.nats_credentials(out, names, hashes, who)
        console.print(f"passwords in {', '.join(map(str, files))}; hashes in {hashes}")
        return 0

    _run(go())


@setup_app.command("kubeconfigs")
def setup_kubeconfigs(
    tokens: Annotated[
        list[str],
        typer.Argument(
            help="SERVICEACCOUNT=PATH: write a kubeconfig with a token of that ServiceAccount "
            "to PATH."
        ),
    ],
    admin_kubeconfig: Annotated[
        Path, typer.Option(help="A kubeconfig that may create ServiceAccount tokens.")
    ],
    namespace: Annotated[str, typer.Option(help="Namespace of the ServiceAccounts.")] = (
        "mcsync-system"
    ),
    server: Annotated[
        str | None,
        typer.Option(help="API server URL to use and to write (default: the admin kubeconfig's)."),
    ] = None,
    expiration_seconds: Annotated[
        int, typer.Option(help="Lifetime of each token (TokenRequest expirationSeconds).")
    ] = 3600,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the ServiceAccounts to exist.")
    ] = 300.0,
    owner: OwnerOpt = None,
) -> None:
    """Write a kubeconfig per ServiceAccount holding a TokenRequest token of that account,
    so that each process gets its own identity and never the admin's. No token is printed."""
    from engine import setup

    async def go() -> int:
        wanted = [setup.TokenFor.parse(t) for t in tokens]
        who = setup.Owner.parse(owner) if owner else None
        files = await setup.token_kubeconfigs(
            admin_kubeconfig, namespace, wanted, server, expiration_seconds, wait, who
        )
        console.print(f"kubeconfigs in {', '.join(map(str, files))}")
        return 0

    _run(go())


@app.command()
def version() -> None:
    """Print the version."""
    print(f"mcsync {__version__}")


def main() -> None:
    app()
