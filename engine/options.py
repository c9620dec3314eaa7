"""Command-line options that several ``mcsync`` commands share, declared once.

``mcsync publisher``, ``mcsync subscriber`` and ``mcsync member`` (both in one process) take the
same connection, identity and process options, the member also takes the publisher's and the
subscriber's own, and every command that reads the log takes the same NATS options. Each group is a
dataclass whose fields carry their declaration (:class:`Opt`); :func:`grouped` adds a group's
fields to a Typer command's options and hands the command one instance of the group, so a new
option (or a changed help text or environment variable) is written in one place and reaches every
command.

The declarations do not need Typer: :func:`parser` reads the same groups into an ``argparse``
parser. The long-running commands start through it (``engine/serve.py``), because Typer builds a
pydantic validator for every option, and with typer, click, pydantic and rich loaded a publisher
or subscriber held about 15 MiB more for its whole life (docs/performance.md §5).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import os
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from engine import jetstream


class Opt:
    """How one option is written on the command line.

    Args:
        flags: its spellings; none: ``--<field-name>``; ``--x/--no-x`` for a switch.
        help: the help text.
        envvar: an environment variable that sets it when the option is not given.
    """

    __slots__ = ("envvar", "flags", "help")

    def __init__(self, *flags: str, help: str, envvar: str | None = None) -> None:
        self.flags = flags
        self.help = help
        self.envvar = envvar


class BadOption(ValueError):
    """A group's options that cannot work (together); both parsers report it as a usage error."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True, slots=True)
class Nats:
    """How to reach NATS and who to be there."""

    nats_url: Annotated[
        str, Opt(envvar="MCSYNC_NATS_URL", help="NATS server URL(s), comma-separated.")
    ] = "nats://127.0.0.1:4222"
    nats_creds: Annotated[
        Path | None,
        Opt(envvar="MCSYNC_NATS_CREDS", help="NATS credentials file (JWT + nkey seed)."),
    ] = None
    nats_user: Annotated[str | None, Opt(envvar="MCSYNC_NATS_USER", help="NATS user.")] = None
    nats_password_file: Annotated[
        Path | None,
        Opt(envvar="MCSYNC_NATS_PASSWORD_FILE", help="File holding the NATS password."),
    ] = None

    nats_ca_file: Annotated[
        Path | None,
        Opt(
            envvar="MCSYNC_NATS_CA_FILE",
            help="PEM file of the CA that signed the NATS server's certificate (tls://).",
        ),
    ] = None
    nats_cert_file: Annotated[
        Path | None,
        Opt(envvar="MCSYNC_NATS_CERT_FILE", help="Client certificate for mutual TLS."),
    ] = None
    nats_key_file: Annotated[
        Path | None,
        Opt(envvar="MCSYNC_NATS_KEY_FILE", help="Key of that client certificate."),
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
        Opt(
            envvar="MCSYNC_CLUSTERSET",
            help="Clusterset name; must match this cluster's clusterset.k8s.io ClusterProperty "
            "(read from it when omitted).",
        ),
    ] = None
    kubeconfig: Annotated[
        Path | None,
        Opt(envvar="KUBECONFIG", help="kubeconfig file; in-cluster config when omitted."),
    ] = None
    health_port: Annotated[
        int, Opt(help="Port of /healthz, /readyz and /metrics (0: any free port).")
    ] = 8080
    create_stream: Annotated[
        bool,
        Opt(
            "--create-stream/--no-create-stream",
            help="Provision the clusterset's stream if missing (needs stream-admin rights). "
            "In the mirror layout the cluster's own mirror is provisioned either way.",
        ),
    ] = True
    lease: Annotated[
        float,
        Opt(
            "--staleness-lease",
            "--lease",
            help="Heartbeat lease in seconds: a member silent this long is Unknown and handled "
            "by the staleness policy (use the same value for every publisher and subscriber).",
        ),
    ] = 30.0
    log_layout: Annotated[
        str,
        Opt(
            envvar="MCSYNC_LOG_LAYOUT",
            help="How this cluster reaches the log: hub (reads and writes the hub's stream), "
            "mirror (its own account on the hub: reads its mirror there, appends pass through), "
            "leaf (its own leaf server: reads the leaf's mirror, appends to the leaf's outbox). "
            "Must match the NATS configuration (docs/deploy.md).",
        ),
    ] = "hub"
    log_format: Annotated[str, Opt(help="Log format: json, console or auto.")] = "auto"
    log_level: Annotated[str, Opt(help="Log level: debug, info, warning, error.")] = "info"

    def __post_init__(self) -> None:
        if self.log_layout not in ("hub", "mirror", "leaf"):
            raise BadOption(f"{self.log_layout!r}: choose hub, mirror or leaf", "--log-layout")


@dataclass(frozen=True, slots=True)
class Publishing:
    """What only a publisher takes (``mcsync publisher`` and ``mcsync member``)."""

    heartbeat_interval: Annotated[float, Opt(help="Seconds between heartbeats.")] = 10.0
    api_server_url: Annotated[
        str | None,
        Opt(help="This cluster's API server URL, advertised in ClusterProfiles."),
    ] = None
    api_server_ca_file: Annotated[Path | None, Opt(help="PEM file of that API server's CA.")] = None


@dataclass(frozen=True, slots=True)
class Subscribing:
    """What only a subscriber takes (``mcsync subscriber`` and ``mcsync member``)."""

    inventory_namespace: Annotated[
        str, Opt(help="Namespace of the ClusterProfiles (written once it exists).")
    ] = "mcsync-system"
    lease_namespace: Annotated[
        str, Opt(help="Namespace of the Leases that show cross-cluster leases.")
    ] = "mcsync-system"
    staleness_policy: Annotated[
        str,
        Opt(
            help="withdraw: a stale member's endpoints leave every import until it returns; "
            "keep: they stay."
        ),
    ] = "withdraw"
    quiet_seconds: Annotated[
        float,
        Opt(help="A changed service is reconciled once its events pause this long (seconds)."),
    ] = 0.05
    burst_quiet_seconds: Annotated[
        float,
        Opt(help="The pause that ends a burst of changes to one service (seconds)."),
    ] = 0.25
    max_delay_seconds: Annotated[
        float,
        Opt(help="A changed service waits at most this long, burst or not (seconds)."),
    ] = 1.0
    state_dir: Annotated[
        Path | None,
        Opt(
            help="Save the folded state here and resume from it at start with only the newer "
            "events (an emptyDir is enough); unset: every start reads the whole log."
        ),
    ] = None

    def __post_init__(self) -> None:
        if self.staleness_policy not in ("withdraw", "keep"):
            raise BadOption("must be withdraw or keep", "--staleness-policy")
        if not 0 <= self.quiet_seconds <= self.burst_quiet_seconds <= self.max_delay_seconds:
            raise BadOption(
                "need 0 <= --quiet-seconds <= --burst-quiet-seconds <= --max-delay-seconds",
                "--quiet-seconds",
            )


G = TypeVar("G")
F = TypeVar("F", bound=Callable[..., Any])


def _declaration(group: type[Any], name: str) -> tuple[Any, Opt]:
    """A field's type (``Annotated`` stripped) and its :class:`Opt`."""
    hint = typing.get_type_hints(group, include_extras=True)[name]
    kind, *meta = typing.get_args(hint)
    (opt,) = [m for m in meta if isinstance(m, Opt)]
    return kind, opt


def grouped(name: str, group: type[Any]) -> Callable[[F], F]:
    """Give a Typer command the options of ``group``; the command receives them as ``name``.

    The command's own parameters come first in ``--help``, then the group's, in field order.
    """
    import typer

    fields = dataclasses.fields(group)
    extra = []
    for f in fields:
        kind, opt = _declaration(group, f.name)
        option = typer.Option(*opt.flags, envvar=opt.envvar, help=opt.help)
        extra.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=f.default,
                annotation=Annotated[kind, option],
            )
        )

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
            try:
                instance = group(**values)
            except BadOption as exc:
                raise typer.BadParameter(str(exc), param_hint=exc.option) from None
            return command(**kwargs, **{name: instance})

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + extra
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must read the signature above, not the command's
        return typing.cast(F, wrapper)

    return decorate


def _converter(kind: Any) -> Callable[[str], Any]:
    """The one type of ``T`` or ``T | None`` that turns a string into the value."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
    if kind not in (str, int, float, Path):
        raise TypeError(f"no command-line conversion for {kind!r}")
    return typing.cast(Callable[[str], Any], kind)


def parser(prog: str, description: str, groups: Sequence[type[Any]]) -> argparse.ArgumentParser:
    """An argparse parser of the options of ``groups``, spelt as Typer spells them.

    An option not given takes its environment variable, then its default, as with Typer.
    """
    ap = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    for group in groups:
        for f in dataclasses.fields(group):
            kind, opt = _declaration(group, f.name)
            flags = opt.flags or (f"--{f.name.replace('_', '-')}",)
            if kind is bool:
                (flag,) = flags  # "--x/--no-x": argparse spells the negative the same way
                positive, _, negative = flag.partition("/")
                if negative != "--no-" + positive.removeprefix("--") or opt.envvar:
                    raise TypeError(f"{f.name}: only --x/--no-x switches are supported")
                ap.add_argument(
                    positive, dest=f.name, default=f.default, help=opt.help,
                    action=argparse.BooleanOptionalAction,
                )  # fmt: skip
                continue
            convert = _converter(kind)
            default = f.default
            if opt.envvar and os.environ.get(opt.envvar):
                default = convert(os.environ[opt.envvar])
            ap.add_argument(*flags, dest=f.name, type=convert, default=default, help=opt.help)
    return ap


def parse(
    ap: argparse.ArgumentParser, groups: Sequence[type[Any]], argv: Sequence[str]
) -> list[Any]:
    """Parse ``argv``; one instance of each group (exits 2 with usage on a bad option)."""
    ns = ap.parse_args(list(argv))
    try:
        return [
            group(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(group)})
            for group in groups
        ]
    except BadOption as exc:
        ap.error(f"{exc.option}: {exc}")
