"""nats-server configuration for a clusterset: who may publish and read what.

The log promises that each cluster writes only below ``mcsync.<set>.<cluster>.>``. mcsync cannot
keep that promise in its own code (a compromised or misconfigured cluster runs whatever code it
likes), so the NATS server keeps it: every cluster connects as its own user whose publish
allow-list names its own subjects and nothing of another cluster's. This module renders that
configuration. It is pure: functions take names and logins and return text or plain data; the
caller decides where the text goes.

The users of a clusterset account:

* one user per cluster: publish its own event subjects and its own dead-letter subject, read
  the stream (stream info, ordered push consumers, direct get, flow-control replies), nothing
  else; stream create, update, delete and purge are denied outright;
* ``admin``: the JetStream API of the account (provisioning streams), but no event subject;
* ``observer`` (optional): read the log and the dead letters, publish nothing but read requests.

The JetStream API subjects are those nats-py 2.16 sends for the calls :mod:`engine.eventlog`
makes; the integration tests drop each one in turn and watch a call fail:

=====================================  ====================================================
call                                   subject
=====================================  ====================================================
``stream_info``                        ``$JS.API.STREAM.INFO.<stream>``
ordered push consumer (no name)        ``$JS.API.CONSUMER.CREATE.<stream>``
``consumer_info``                      ``$JS.API.CONSUMER.INFO.<stream>.<consumer>``
``get_last_msg(direct=True)``          ``$JS.API.DIRECT.GET.<stream>.<subject>``
flow-control reply (ordered consumer)  ``$JS.FC.<stream>.<...>``
acks of ``js.publish``, API replies,   ``_INBOX.>`` (subscribe)
consumer deliveries
=====================================  ====================================================

Third-party readers (the observer) may also create named consumers
(``$JS.API.CONSUMER.CREATE.<stream>.<name>[.<filter>]``; ``>`` does not match the bare form, so
both are listed), delete their consumers (``$JS.API.CONSUMER.DELETE.<stream>.<consumer>``) and
direct-get by sequence (``$JS.API.DIRECT.GET.<stream>``); mcsync itself does none of these, so
cluster users do not get them. Ordered consumers ack nothing (``AckPolicy.NONE``): no ``$JS.ACK``.

A push consumer's deliver subject is chosen in the request body, where subject permissions
cannot see it; the server refuses a deliver subject inside the stream's own subjects, and a
delivery is never taken for a JetStream API request (the integration tests check both).

:func:`render_hub` renders a whole hub server; clusters connect to it directly, which is how
mcsync runs today. :func:`render_leaf` renders a leaf server with its own JetStream domain: the
cluster writes to a local outbox that the hub sources (mapping its subjects to the cluster's
own), and reads a local mirror of the hub stream, so it keeps working while the WAN is down.
The integration tests run both rendered configurations together, with a real nkey on the link;
the mcsync client cannot use that layout yet, because it writes and reads one stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from engine import subjects

API: Final = "$JS.API"
"""The JetStream API prefix of the local domain."""
INBOX: Final = "_INBOX"
"""nats-py's default reply prefix (``inbox_prefix`` of ``nats.connect``)."""
ACCOUNT: Final = "MCSYNC"
DLQ_PREFIX: Final = "mcsyncdlq"
OUTBOX_PREFIX: Final = "mcsyncout"

_BCRYPT = re.compile(r"^\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}$")
_NKEY_USER = re.compile(r"^U[A-Z2-7]{55}$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*$")

LoginKind = Literal["bcrypt", "plain", "nkey"]


# --- names shared with the log -------------------------------------------------------------


def stream(clusterset: str) -> str:
    """The clusterset's stream (same as :func:`engine.subjects.stream_name`)."""
    return subjects.stream_name(clusterset)


def dead_letter_stream(clusterset: str) -> str:
    """The stream of undecodable messages (same name :mod:`engine.eventlog` provisions)."""
    return "MCSYNCDLQ_" + stream(clusterset).removeprefix("MCSYNC_")


def dead_letter_subject(clusterset: str, cluster: str) -> str:
    """Where a cluster's subscriber copies a message it could not decode."""
    return f"{DLQ_PREFIX}.{clusterset}.{cluster}"


def outbox_stream(clusterset: str, cluster: str) -> str:
    """Leaf layout: the cluster's local outbox stream (unique across JetStream domains)."""
    return f"{stream(clusterset)}_OUTBOX_{cluster.upper().replace('-', '_')}"


def mirror_stream(clusterset: str, cluster: str) -> str:
    """Leaf layout: the cluster's local mirror of the hub stream (unique across domains)."""
    return f"{stream(clusterset)}_MIRROR_{cluster.upper().replace('-', '_')}"


def outbox_subjects(clusterset: str, cluster: str) -> str:
    """Leaf layout: the local-only subjects of the outbox (the hub maps them to the log's)."""
    return f"{OUTBOX_PREFIX}.{clusterset}.{cluster}.>"


# --- logins --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Login:
    """How one user authenticates. The secret never appears in ``repr``."""

    kind: LoginKind
    value: str = field(repr=False)


def bcrypt_password(hashed: str) -> Login:
    """A password given as its bcrypt hash (``$2a$``/``$2b$``...), the form to deploy."""
    if not _BCRYPT.fullmatch(hashed):
        raise ValueError("not a bcrypt hash (expected $2a$NN$ followed by 53 characters)")
    return Login("bcrypt", hashed)


def plain_password(password: str) -> Login:
    """A clear-text password: local tests only; rendering it needs ``allow_plain=True``."""
    if not password or any(c in password for c in '"\\\n\r'):
        raise ValueError("a plain password must be non-empty, without quotes or line breaks")
    return Login("plain", password)


def nkey(public_key: str) -> Login:
    """A user nkey, given as its public key (``U`` + 55 base32 characters)."""
    if not _NKEY_USER.fullmatch(public_key):
        raise ValueError("not a user nkey public key (expected U followed by 55 characters)")
    return Login("nkey", public_key)


def placeholder_hash(label: str) -> Login:
    """A well-formed bcrypt hash that no password is known to match, for example files.

    A server started with it accepts no login for that user until the hash is replaced.
    """
    body = re.sub(r"[^A-Za-z0-9]", "", f"REPLACEWITHBCRYPTHASHOF{label.upper()}PASSWORD")
    return bcrypt_password("$2a$11$" + body[:53].ljust(53, "."))


def placeholder_nkey(label: str) -> Login:
    """A public-key-shaped placeholder whose checksum is wrong on purpose.

    nats-server refuses to start with it, so an example cannot be deployed unchanged.
    """
    body = re.sub(r"[^A-Z2-7]", "", f"PLACEHOLDER{label.upper()}NKEY")
    return nkey("U" + body[:55].ljust(55, "X"))


# --- permissions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Permissions:
    """Subject allow- and deny-lists of one user (deny wins over allow)."""

    publish_allow: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # To nats-server an empty allow-list means "no restriction", the opposite of intent.
        if not self.publish_allow or not self.subscribe_allow:
            raise ValueError("an empty allow-list would allow everything; list what is allowed")


def stream_mutations(api: str = API) -> tuple[str, ...]:
    """JetStream API subjects that change or destroy streams: denied to all but admin."""
    return (
        f"{api}.STREAM.CREATE.>",
        f"{api}.STREAM.UPDATE.>",
        f"{api}.STREAM.DELETE.>",
        f"{api}.STREAM.PURGE.>",
        f"{api}.STREAM.MSG.DELETE.>",
    )


def stream_read(stream_name: str, api: str = API) -> tuple[str, ...]:
    """What :mod:`engine.eventlog` needs to read one stream with nats-py 2.16, and no more."""
    return (
        f"{api}.STREAM.INFO.{stream_name}",
        # Ordered push consumers have no name: nats-py creates them on the bare subject.
        f"{api}.CONSUMER.CREATE.{stream_name}",
        f"{api}.CONSUMER.INFO.{stream_name}.*",
        # The last message of a subject is addressed in the request subject (several tokens,
        # wildcards included).
        f"{api}.DIRECT.GET.{stream_name}.>",
        # Without flow-control replies an ordered consumer stalls on a large backlog.
        f"$JS.FC.{stream_name}.>",
    )


def stream_read_tools(stream_name: str, api: str = API) -> tuple[str, ...]:
    """:func:`stream_read` plus what other readers commonly use: still read-only."""
    return (
        *stream_read(stream_name, api),
        f"{api}.CONSUMER.CREATE.{stream_name}.>",
        f"{api}.CONSUMER.DELETE.{stream_name}.*",
        f"{api}.DIRECT.GET.{stream_name}",
    )


def _check(clusterset: str, cluster: str | None = None) -> None:
    subjects.check_label("clusterset name", clusterset)
    if cluster is not None:
        subjects.check_label("cluster id", cluster)


def cluster_permissions(clusterset: str, cluster: str, inbox: str = INBOX) -> Permissions:
    """A cluster's publisher and subscriber: write its own subjects, read the log.

    Args:
        clusterset: the clusterset name.
        cluster: the cluster id (a DNS label, so it can never be a wildcard).
        inbox: the reply prefix the client connects with (``inbox_prefix`` in nats-py).
    """
    _check(clusterset, cluster)
    return Permissions(
        publish_allow=(
            subjects.cluster_subjects(clusterset, cluster),
            dead_letter_subject(clusterset, cluster),
            *stream_read(stream(clusterset)),
        ),
        publish_deny=stream_mutations(),
        subscribe_allow=(f"{inbox}.>",),
    )


def observer_permissions(clusterset: str, inbox: str = INBOX) -> Permissions:
    """A third-party tool: read the log and the dead letters; publish no message of either."""
    _check(clusterset)
    return Permissions(
        publish_allow=(
            *stream_read_tools(stream(clusterset)),
            *stream_read_tools(dead_letter_stream(clusterset)),
        ),
        publish_deny=(
            *stream_mutations(),
            f"{subjects.PREFIX}.>",
            f"{DLQ_PREFIX}.>",
        ),
        subscribe_allow=(f"{inbox}.>",),
    )


def admin_permissions(clusterset: str, inbox: str = INBOX) -> Permissions:
    """Stream provisioning: the account's whole JetStream API, but no event of any cluster.

    Keep these credentials out of the clusters; they can delete the log.
    """
    _check(clusterset)
    return Permissions(
        publish_allow=(f"{API}.>", "$JS.FC.>"),
        publish_deny=(f"{subjects.PREFIX}.>", f"{DLQ_PREFIX}.>"),
        subscribe_allow=(f"{inbox}.>",),
    )


def leaf_link_permissions(clusterset: str, cluster: str, hub_domain: str = "hub") -> Permissions:
    """Hub side of the leaf connection from ``cluster`` (leaf layout).

    On a leaf connection, *publish* is what the leaf may send into the hub and *subscribe* is
    what the hub may send to the leaf. The leaf sends no event subject at all: its events reach
    the hub only through the hub's source of its outbox, whose subject transform maps
    ``mcsyncout.<set>.<cluster>.>`` to ``mcsync.<set>.<cluster>.>``. Every entry was needed
    with nats-server 2.15.1 (sourcing into the hub and mirroring back, with a backlog large
    enough for flow control): the integration tests drop each one and watch a copy stall.

    The delivery and reply subjects (``$JS.S.>``, ``$JS.M.>``, ``$JSC.R.>``) carry random ids
    and cannot be scoped to one cluster, so this trusts the leaf *server*; a cluster whose
    server might be hostile should connect its processes to the hub directly instead.
    """
    _check(clusterset, cluster)
    hub_api = f"$JS.{hub_domain}.API"
    leaf_api = f"$JS.{cluster}.API"
    hub_stream = stream(clusterset)
    outbox = outbox_stream(clusterset, cluster)
    return Permissions(
        publish_allow=(
            # The leaf's mirror of the hub stream: its consumer there, flow-control replies.
            f"{hub_api}.CONSUMER.CREATE.{hub_stream}",
            f"$JS.FC.{hub_stream}.>",
            # The hub's source of the outbox: deliveries and API replies going back.
            "$JS.S.>",
            "$JSC.R.>",
        ),
        publish_deny=(
            *stream_mutations(hub_api),
            *stream_mutations(),
            f"{subjects.PREFIX}.>",
            f"{DLQ_PREFIX}.>",
        ),
        subscribe_allow=(
            # The hub's source consumer on the outbox (a named consumer, created in the leaf's
            # domain) and its flow control.
            f"{leaf_api}.CONSUMER.CREATE.{outbox}.>",
            f"$JS.FC.{outbox}.>",
            # The mirror's deliveries and the replies to its API requests.
            "$JS.M.>",
            "$JSC.R.>",
        ),
        subscribe_deny=stream_mutations(leaf_api),
    )


def leaf_local_permissions(clusterset: str, cluster: str, inbox: str = INBOX) -> Permissions:
    """Leaf layout: the cluster's mcsync processes on their own leaf server.

    They write to the local outbox and read the local mirror of the hub stream (which needs
    ``allow_direct`` and ``mirror_direct`` for direct gets). The mcsync client cannot do that
    yet: it writes and reads one stream.
    """
    _check(clusterset, cluster)
    return Permissions(
        publish_allow=(
            outbox_subjects(clusterset, cluster),
            dead_letter_subject(clusterset, cluster),
            *stream_read(outbox_stream(clusterset, cluster)),
            *stream_read(mirror_stream(clusterset, cluster)),
        ),
        publish_deny=stream_mutations(),
        subscribe_allow=(f"{inbox}.>",),
    )


# --- users ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    """One entry of an account's ``users`` list."""

    name: str
    login: Login
    permissions: Permissions

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"user name {self.name!r}: use letters, digits, '-' and '_'")


def cluster_user(clusterset: str, cluster: str, login: Login) -> User:
    """The user a cluster's mcsync processes connect as; named like the cluster."""
    return User(cluster, login, cluster_permissions(clusterset, cluster))


def observer_user(clusterset: str, login: Login, name: str = "observer") -> User:
    """The read-only user of third-party tools."""
    return User(name, login, observer_permissions(clusterset))


def admin_user(clusterset: str, login: Login, name: str = "admin") -> User:
    """The stream administrator."""
    return User(name, login, admin_permissions(clusterset))


def leaf_link_user(clusterset: str, cluster: str, login: Login, hub_domain: str = "hub") -> User:
    """The user a cluster's leaf server connects to the hub as (leaf layout)."""
    return User(f"leaf-{cluster}", login, leaf_link_permissions(clusterset, cluster, hub_domain))


# --- rendering -----------------------------------------------------------------------------


def _q(value: str) -> str:
    """A double-quoted config string: no variable expansion, '$' kept as is."""
    return json.dumps(value)


def _list(key: str, items: Sequence[str], indent: str) -> list[str]:
    """``key: [ ... ]`` with one quoted item per line."""
    if not items:
        return [f"{indent}{key}: []"]
    inner = indent + "  "
    return [f"{indent}{key}: [", *(f"{inner}{_q(i)}," for i in items), f"{indent}]"]


def _side(name: str, allow: Sequence[str], deny: Sequence[str], indent: str) -> list[str]:
    inner = indent + "  "
    lines = [f"{indent}{name}: {{", *_list("allow", allow, inner)]
    if deny:
        lines += _list("deny", deny, inner)
    lines.append(f"{indent}}}")
    return lines


def _login(login: Login, allow_plain: bool) -> str:
    if login.kind == "nkey":
        return f"nkey: {_q(login.value)}"
    if login.kind == "plain" and not allow_plain:
        raise ValueError(
            "refusing to render a clear-text password; give a bcrypt hash "
            "(allow_plain=True is for local tests only)"
        )
    return f"password: {_q(login.value)}"


def render_user(user: User, indent: str = "", allow_plain: bool = False) -> list[str]:
    """One ``users`` entry as config lines."""
    inner = indent + "  "
    perm = inner + "  "
    lines = [f"{indent}{{"]
    if user.login.kind != "nkey":  # an nkey user is named by its key
        lines.append(f"{inner}user: {_q(user.name)}")
    else:
        lines.append(f"{inner}# {user.name}")
    lines.append(f"{inner}{_login(user.login, allow_plain)}")
    lines.append(f"{inner}permissions: {{")
    p = user.permissions
    lines += _side("publish", p.publish_allow, p.publish_deny, perm)
    lines += _side("subscribe", p.subscribe_allow, p.subscribe_deny, perm)
    lines.append(f"{inner}}}")
    lines.append(f"{indent}}}")
    return lines


def render_accounts(
    users: Sequence[User], account: str = ACCOUNT, allow_plain: bool = False
) -> str:
    """The ``accounts`` block: one JetStream-enabled account holding ``users``.

    This is the part to append to a server configuration that already has its listeners and
    ``jetstream`` block (e.g. ``NatsServer(extra_config=...)``).
    """
    if not _NAME.fullmatch(account):
        raise ValueError(f"account name {account!r}: use letters, digits, '-' and '_'")
    names = [u.name for u in users]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate user names in {names}")
    lines = ["accounts {", f"  {account}: {{", "    jetstream: enabled", "    users: ["]
    for user in users:
        lines += render_user(user, "      ", allow_plain)
    lines += ["    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Tls:
    """File paths of a ``tls`` block (mounted from a Kubernetes Secret, say)."""

    cert_file: str
    key_file: str
    ca_file: str | None = None
    verify: bool = False
    """Require client certificates signed by ``ca_file`` (mutual TLS)."""


def _tls(tls: Tls | None, indent: str) -> list[str]:
    if tls is None:
        return []
    inner = indent + "  "
    lines = [
        f"{indent}tls {{",
        f"{inner}cert_file: {_q(tls.cert_file)}",
        f"{inner}key_file: {_q(tls.key_file)}",
    ]
    if tls.ca_file:
        lines.append(f"{inner}ca_file: {_q(tls.ca_file)}")
    if tls.verify:
        lines.append(f"{inner}verify: true")
    lines.append(f"{indent}}}")
    return lines


@dataclass(frozen=True, slots=True)
class Hub:
    """The hub nats-server of one clusterset (clients connect to it directly)."""

    clusterset: str
    clusters: Mapping[str, Login]
    """Cluster id -> login of that cluster's user."""
    admin: Login
    observer: Login | None = None
    leaf_links: Mapping[str, Login] = field(default_factory=dict)
    """Cluster id -> login of its leaf server's connection (leaf layout; empty: no leafnodes)."""
    account: str = ACCOUNT
    server_name: str = "mcsync-hub"
    listen: str = "0.0.0.0:4222"
    monitor: str | None = "0.0.0.0:8222"
    """The HTTP monitoring endpoint (/healthz, /varz, /jsz); None: off."""
    leafnode_listen: str = "0.0.0.0:7422"
    store_dir: str = "/data/jetstream"
    domain: str = "hub"
    max_file_store: str = "10G"
    max_memory_store: str = "256M"
    max_consumers: int = 5000
    """Default consumer limit per stream (the server's own default is 1000; every subscriber,
    replay and third-party reader holds one ordered consumer)."""
    tls: Tls | None = None
    leaf_tls: Tls | None = None


def hub_users(hub: Hub) -> list[User]:
    """Every user of the hub's account, admin first, then clusters, observer, leaf links."""
    users = [admin_user(hub.clusterset, hub.admin)]
    users += [cluster_user(hub.clusterset, c, hub.clusters[c]) for c in sorted(hub.clusters)]
    if hub.observer is not None:
        users.append(observer_user(hub.clusterset, hub.observer))
    users += [
        leaf_link_user(hub.clusterset, c, hub.leaf_links[c], hub.domain)
        for c in sorted(hub.leaf_links)
    ]
    return users


def _header(title: str, notes: Sequence[str]) -> list[str]:
    lines = [f"# {title}", "# Rendered by engine.natsconfig; change the inputs and re-render."]
    lines += [f"# {n}" if n else "#" for n in notes]
    return [*lines, ""]


def render_hub(hub: Hub, allow_plain: bool = False, notes: Sequence[str] = ()) -> str:
    """A complete nats-server configuration for the hub of ``hub.clusterset``."""
    _check(hub.clusterset)
    for c in (*hub.clusters, *hub.leaf_links):
        _check(hub.clusterset, c)
    subjects.check_label("JetStream domain", hub.domain)
    lines = _header(f"nats-server hub of mcsync clusterset {hub.clusterset!r}", notes)
    lines += [
        f"server_name: {_q(hub.server_name)}",
        f"listen: {_q(hub.listen)}",
    ]
    if hub.monitor:
        lines.append(f"http: {_q(hub.monitor)}")
    lines += [
        "# An event body may be 1 MiB; headers come on top.",
        "max_payload: 2MB",
        "",
        "jetstream {",
        f"  store_dir: {_q(hub.store_dir)}",
        f"  domain: {_q(hub.domain)}",
        f"  max_file_store: {hub.max_file_store}",
        f"  max_memory_store: {hub.max_memory_store}",
        "  limits {",
        f"    default_max_consumers: {hub.max_consumers}",
        "  }",
        "}",
        "",
    ]
    tls = _tls(hub.tls, "")
    if tls:
        lines += [*tls, ""]
    if hub.leaf_links:
        lines += ["leafnodes {", f"  listen: {_q(hub.leafnode_listen)}"]
        lines += _tls(hub.leaf_tls, "  ")
        lines += ["}", ""]
    lines.append(render_accounts(hub_users(hub), hub.account, allow_plain).rstrip("\n"))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Leaf:
    """A leaf nats-server in one Kubernetes cluster, with its own JetStream domain."""

    clusterset: str
    cluster: str
    hub_urls: tuple[str, ...]
    """Leafnode URLs of the hub, e.g. ``nats-leaf://hub.example.com:7422``; no credentials."""
    local: Login
    """Login of the user the cluster's mcsync processes connect to this leaf as."""
    admin: Login
    """Login of the leaf's stream administrator (creates the outbox and the mirror)."""
    nkey_seed_env: str = "MCSYNC_LEAF_NKEY_SEED"
    """Environment variable holding the leaf link's nkey seed (from a Secret, never a file
    in the repository)."""
    account: str = ACCOUNT
    listen: str = "0.0.0.0:4222"
    monitor: str | None = "0.0.0.0:8222"
    store_dir: str = "/data/jetstream"
    max_file_store: str = "10G"
    max_memory_store: str = "256M"
    hub_tls: Tls | None = None
    """Client side of the leaf link's TLS (the hub's leafnode listener verifies the cert)."""


def render_leaf(leaf: Leaf, allow_plain: bool = False, notes: Sequence[str] = ()) -> str:
    """A leaf nats-server configuration (leaf layout; see the module docstring)."""
    _check(leaf.clusterset, leaf.cluster)
    if not _ENV.fullmatch(leaf.nkey_seed_env):
        raise ValueError(f"{leaf.nkey_seed_env!r} is not an environment variable name")
    if not leaf.hub_urls or any("@" in u for u in leaf.hub_urls):
        raise ValueError("give hub URLs without credentials; the link uses an nkey")
    users = [
        admin_user(leaf.clusterset, leaf.admin),
        User(leaf.cluster, leaf.local, leaf_local_permissions(leaf.clusterset, leaf.cluster)),
    ]
    lines = _header(
        f"nats-server leaf of cluster {leaf.cluster!r} in mcsync clusterset "
        f"{leaf.clusterset!r} (leaf layout)",
        notes,
    )
    lines += [f"server_name: {_q('mcsync-leaf-' + leaf.cluster)}", f"listen: {_q(leaf.listen)}"]
    if leaf.monitor:
        lines.append(f"http: {_q(leaf.monitor)}")
    lines += [
        "max_payload: 2MB",
        "",
        "jetstream {",
        f"  store_dir: {_q(leaf.store_dir)}",
        "  # Its own domain: the local JetStream API keeps working while the hub is away.",
        f"  domain: {_q(leaf.cluster)}",
        f"  max_file_store: {leaf.max_file_store}",
        f"  max_memory_store: {leaf.max_memory_store}",
        "}",
        "",
        "leafnodes {",
        "  remotes: [",
        "    {",
    ]
    lines += _list("urls", leaf.hub_urls, "      ")
    lines += [
        f"      account: {_q(leaf.account)}",
        "      # The seed comes from the environment, so this file holds no secret.",
        f"      nkey: ${leaf.nkey_seed_env}",
    ]
    lines += _tls(leaf.hub_tls, "      ")
    lines += ["    }", "  ]", "}", ""]
    lines.append(render_accounts(users, leaf.account, allow_plain).rstrip("\n"))
    return "\n".join(lines) + "\n"


# --- the examples shipped in deploy/nats ---------------------------------------------------

EXAMPLE_CLUSTERSET: Final = "prod"
EXAMPLE_CLUSTERS: Final = ("east", "west")

_HOW_TO_HASH = (
    "Every password below is a placeholder hash that matches no known password. Generate a",
    "real hash per user (e.g. `nats server passwd`, or `htpasswd -nbBC 11 '' <password>` and",
    "drop the leading ':') and keep the clear password only in that cluster's Kubernetes Secret.",
)


def example_hub(with_leafnodes: bool = False) -> Hub:
    """The hub of the example clusterset ``prod`` with clusters ``east`` and ``west``."""
    return Hub(
        clusterset=EXAMPLE_CLUSTERSET,
        clusters={c: placeholder_hash(c) for c in EXAMPLE_CLUSTERS},
        admin=placeholder_hash("admin"),
        observer=placeholder_hash("observer"),
        leaf_links=(
            {c: placeholder_nkey(f"leaf{c}") for c in EXAMPLE_CLUSTERS} if with_leafnodes else {}
        ),
        tls=Tls("/etc/nats/tls/tls.crt", "/etc/nats/tls/tls.key"),
        leaf_tls=(
            Tls(
                "/etc/nats/leaf-tls/tls.crt",
                "/etc/nats/leaf-tls/tls.key",
                "/etc/nats/leaf-tls/ca.crt",
                verify=True,
            )
            if with_leafnodes
            else None
        ),
    )


def examples() -> dict[str, str]:
    """File name -> text of the example configurations in ``deploy/nats``."""
    return {
        "hub.conf": render_hub(
            example_hub(),
            notes=(
                "Clusters connect to this server directly, each as its own user.",
                "",
                *_HOW_TO_HASH,
            ),
        ),
        "hub-leafnodes.conf": render_hub(
            example_hub(with_leafnodes=True),
            notes=(
                "The hub of the leaf layout: clusters may still connect directly,",
                "and each cluster's leaf server connects with the nkey of its leaf-<cluster>",
                "user. The nkeys below are placeholders the server refuses; create real pairs",
                "with `nk -gen user -pubout` and put each seed in that leaf's Secret.",
                "",
                *_HOW_TO_HASH,
            ),
        ),
        "leaf.conf": render_leaf(
            Leaf(
                clusterset=EXAMPLE_CLUSTERSET,
                cluster="east",
                hub_urls=("nats-leaf://hub.example.com:7422",),
                local=placeholder_hash("east"),
                admin=placeholder_hash("eastadmin"),
                hub_tls=Tls(
                    "/etc/nats/leaf-tls/tls.crt",
                    "/etc/nats/leaf-tls/tls.key",
                    "/etc/nats/leaf-tls/ca.crt",
                ),
            ),
            notes=(
                "The leaf server of cluster east (render again with cluster='west' for west).",
                "The server side is tested; the mcsync client does not yet write to an outbox",
                "stream and read a mirror, which this layout needs (docs/deploy.md).",
                "",
                *_HOW_TO_HASH,
            ),
        ),
    }
