"""Command-line options that several ``mcsync`` commands share, declared once.

``mcsync publisher``, ``mcsync subscriber`` and ``mcsync member`` (both in one process) take the
same connection, identity and process options, the member also takes the publisher's and the
subscriber's own, and every command that reads the log takes the same NATS options. Each group is a
dataclass whose fields carry their Typer declaration; :func:`grouped` adds a group's fields to a
command's options and hands the command one instance of the group, so a new option (or a changed
help text or environment variable) is written in one place and reaches every command.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from engine import jetstream


@dataclass(frozen=True, slots=True)
class Nats:
    """How to reach NATS and who to be there."""

    nats_url: Annotated[
        str, typer.Option(envvar="MCSYNC_NATS_URL", help="NATS server URL(s), comma-separated.")
    ] = "nats://127.0.0.1:4222"
    nats_creds: Annotated[
        Path | None,
        typer.Option(envvar="MCSYNC_NATS_CREDS", help="NATS credentials file (JWT + nkey seed)."),
    ] = None
    nats_user: Annotated[str | None, typer.Option(envvar="MCSYNC_NATS_USER", help="NATS user.")] = (
        None
    )
    nats_password_file: Annotated[
        Path | None,
        typer.Option(envvar="MCSYNC_NATS_PASSWORD_FILE", help="File holding the NATS password."),
    ] = None

    nats_ca_file: Annotated[
        Path | None,
        typer.Option(
            envvar="MCSYNC_NATS_CA_FILE",
            help="PEM file of the CA that signed the NATS server's certificate (tls://).",
        ),
    ] = None
    nats_cert_file: Annotated[
        Path | None,
        typer.Option(envvar="MCSYNC_NATS_CERT_FILE", help="Client certificate for mutual TLS."),
    ] = None
    nats_key_file: Annotated[
        Path | None,
        typer.Option(envvar="MCSYNC_NATS_KEY_FILE", help="Key of that client certificate."),
    ] = None

    @property
    def tls(self) -> jetstream.Tls | None:
        if self.nats_ca_file is None and self.nats_cert_file is None and self.nats_key_file is None:
            return None
        from engine import jetstream  # lazily: `mcsync --help` does not load the NATS client

        return jetstream.Tls(self.nats_ca_file, self.nats_cert_file, self.nats_key_file)

    async def connect(self, name: str) -> NATS:
        """A connection with these options (it reconnects forever, like every mcsync one)."""
        from engine import jetstream

        return await jetstream.connect(
            self.nats_url,
            name=name,
            credentials=self.credentials,
            user=self.nats_user,
            password=self.password,
            tls=self.tls,
        )

    @property
    def credentials(self) -> str | None:
        return str(self.nats_creds) if self.nats_creds else None

    @property
    def password(self) -> str | None:
        """The password, read from its file (secrets stay files, never option values)."""
        if self.nats_password_file is None:
            return None
        return self.nats_password_file.read_text().strip()


@dataclass(frozen=True, slots=True)
class Member:
    """What a cluster's mcsync process (publisher, subscriber or both) needs to run."""

    clusterset: Annotated[
        str | None,
        typer.Option(
            envvar="MCSYNC_CLUSTERSET",
            help="Clusterset name; must match this cluster's clusterset.k8s.io ClusterProperty "
            "(read from it when omitted).",
        ),
    ] = None
    kubeconfig: Annotated[
        Path | None,
        typer.Option(envvar="KUBECONFIG", help="kubeconfig file; in-cluster config when omitted."),
    ] = None
    health_port: Annotated[
        int, typer.Option(help="Port of /healthz, /readyz and /metrics (0: any free port).")
    ] = 8080
    create_stream: Annotated[
        bool,
        typer.Option(
            "--create-stream/--no-create-stream",
            help="Provision the clusterset's stream if missing (needs stream-admin rights).",
        ),
    ] = True
    lease: Annotated[
        float,
        typer.Option(
            "--staleness-lease",
            "--lease",
            help="Heartbeat lease in seconds: a member silent this long is Unknown and handled "
            "by the staleness policy (use the same value for every publisher and subscriber).",
        ),
    ] = 30.0
    log_format: Annotated[str, typer.Option(help="Log format: json, console or auto.")] = "auto"
    log_level: Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")] = "info"


@dataclass(frozen=True, slots=True)
class Publishing:
    """What only a publisher takes (``mcsync publisher`` and ``mcsync member``)."""

    heartbeat_interval: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 10.0
    api_server_url: Annotated[
        str | None,
        typer.Option(help="This cluster's API server URL, advertised in ClusterProfiles."),
    ] = None
    api_server_ca_file: Annotated[
        Path | None, typer.Option(help="PEM file of that API server's CA.")
    ] = None


@dataclass(frozen=True, slots=True)
class Subscribing:
    """What only a subscriber takes (``mcsync subscriber`` and ``mcsync member``)."""

    inventory_namespace: Annotated[
        str, typer.Option(help="Namespace of the ClusterProfiles (written once it exists).")
    ] = "mcsync-system"
    lease_namespace: Annotated[
        str, typer.Option(help="Namespace of the Leases that show cross-cluster leases.")
    ] = "mcsync-system"
    staleness_policy: Annotated[
        str,
        typer.Option(
            help="withdraw: a stale member's endpoints leave every import until it returns; "
            "keep: they stay."
        ),
    ] = "withdraw"
    quiet_seconds: Annotated[
        float,
        typer.Option(
            help="A changed service is reconciled once its events pause this long (seconds)."
        ),
    ] = 0.05
    burst_quiet_seconds: Annotated[
        float,
        typer.Option(help="The pause that ends a burst of changes to one service (seconds)."),
    ] = 0.25
    max_delay_seconds: Annotated[
        float,
        typer.Option(help="A changed service waits at most this long, burst or not (seconds)."),
    ] = 1.0

    def check(self) -> None:
        """Refuse settings that cannot work together (before anything starts)."""
        if self.staleness_policy not in ("withdraw", "keep"):
            raise typer.BadParameter("--staleness-policy must be withdraw or keep")
        if not 0 <= self.quiet_seconds <= self.burst_quiet_seconds <= self.max_delay_seconds:
            raise typer.BadParameter(
                "need 0 <= --quiet-seconds <= --burst-quiet-seconds <= --max-delay-seconds"
            )


G = TypeVar("G")
F = TypeVar("F", bound=Callable[..., Any])


def grouped(name: str, group: type[Any]) -> Callable[[F], F]:
    """Give a command the options of ``group``; the command receives them as ``name``.

    The command's own parameters come first in ``--help``, then the group's, in field order.
    """
    fields = dataclasses.fields(group)
    hints = typing.get_type_hints(group, include_extras=True)
    extra = [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
        )
        for f in fields
    ]

    def decorate(command: F) -> F:
        own_hints = typing.get_type_hints(command, include_extras=True)
        own = [
            p.replace(annotation=own_hints.get(p.name, p.annotation))
            for p in inspect.signature(command).parameters.values()
            if p.name != name
        ]
        clash = {p.name for p in own} & {p.name for p in extra}
        if clash:
            raise TypeError(f"{command.__name__}: options {sorted(clash)} are also in the group")

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {f.name: kwargs.pop(f.name) for f in fields}
            return command(**kwargs, **{name: group(**values)})

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + extra
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must read the signature above, not the command's
        return typing.cast(F, wrapper)

    return decorate
