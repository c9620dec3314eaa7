"""Who may publish and read what: stream names, logins, permission sets and users per role."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

from engine.core import subjects

API: Final = "$JS.API"
"""The JetStream API prefix of the local domain."""
INBOX: Final = "_INBOX"
"""nats-py's default reply prefix (``inbox_prefix`` of ``nats.connect``)."""
ACCOUNT: Final = "MCSYNC"
DLQ_PREFIX: Final = "mcsyncdlq"
OUTBOX_PREFIX: Final = "mcsyncout"
DELIVER_PREFIX: Final = "mcsyncdeliver"
LOG_API: Final = "$JS.LOG.API"
"""Mirror layout: where a cluster's account sees the log account's consumer API (its mirror's
consumer is created through it; no user of the cluster may publish there)."""

_BCRYPT = re.compile(r"^\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}$")
_NKEY_USER = re.compile(r"^U[A-Z2-7]{55}$")
NAME = re.compile(r"^[A-Za-z0-9_-]+$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")

LoginKind = Literal["bcrypt", "plain", "nkey", "variable"]


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


def cluster_account(cluster: str) -> str:
    """Mirror layout: the account of one cluster's processes on the hub."""
    return f"{ACCOUNT}_{cluster.upper().replace('-', '_')}"


def mirror_deliver(clusterset: str, cluster: str) -> str:
    """Mirror layout: the delivery prefix of a cluster's mirror (exported to it alone)."""
    return f"{DELIVER_PREFIX}.{clusterset}.{cluster}"


def leaf_inbox(cluster: str) -> str:
    """Leaf layout: the reply prefix of a cluster's processes on its leaf, so that the leaf link
    carries replies to that cluster's processes and nobody else's."""
    return f"{INBOX}.{cluster}"


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


def password_variable_name(user: str) -> str:
    """The config variable that holds ``user``'s password hash (see :func:`password_variable`)."""
    if not NAME.fullmatch(user):
        raise ValueError(f"user name {user!r}: use letters, digits, '-' and '_'")
    return "MCSYNC_PASSWORD_" + user.upper().replace("-", "_")


def password_variable(name: str) -> Login:
    """A password the server reads from a config variable (``password: $NAME``).

    The variable is defined in a file the configuration includes (or in the server's
    environment), so the rendered configuration holds no password or hash at all: whoever
    deploys it generates that file (``mcsync setup nats-credentials`` does, for compose.yaml).
    """
    if not ENV_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a variable name (capitals, digits and '_')")
    return Login("variable", name)


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


def check_names(clusterset: str, cluster: str | None = None) -> None:
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
    check_names(clusterset, cluster)
    return Permissions(
        publish_allow=(
            subjects.cluster_subjects(clusterset, cluster),
            dead_letter_subject(clusterset, cluster),
            *stream_read(stream(clusterset)),
        ),
        publish_deny=stream_mutations(),
        subscribe_allow=(f"{inbox}.>",),
    )


def mirror_cluster_permissions(clusterset: str, cluster: str, inbox: str = INBOX) -> Permissions:
    """Mirror layout: a cluster's processes in their own account.

    They append on their own subjects (which pass through to the log), read their account's
    mirror of the log, and may create and update that mirror (and no other stream): it is a copy
    of what they may read anyway, and it lives in their account, under its limits.
    """
    check_names(clusterset, cluster)
    mirror = mirror_stream(clusterset, cluster)
    return Permissions(
        publish_allow=(
            subjects.cluster_subjects(clusterset, cluster),
            dead_letter_subject(clusterset, cluster),
            *stream_read(mirror),
            f"{API}.STREAM.CREATE.{mirror}",
            f"{API}.STREAM.UPDATE.{mirror}",
        ),
        publish_deny=(
            f"{API}.STREAM.DELETE.>",
            f"{API}.STREAM.PURGE.>",
            f"{API}.STREAM.MSG.DELETE.>",
        ),
        subscribe_allow=(f"{inbox}.>",),
    )


def observer_permissions(clusterset: str, inbox: str = INBOX) -> Permissions:
    """A third-party tool: read the log and the dead letters; publish no message of either."""
    check_names(clusterset)
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
    check_names(clusterset)
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
    check_names(clusterset, cluster)
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
            # Lease events go to the log directly: their compare-and-set must see every
            # cluster's. Only this cluster's.
            subjects.cluster_leases(clusterset, cluster),
        ),
        publish_deny=(
            *stream_mutations(hub_api),
            *stream_mutations(),
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
            # The log's acks of the leases, to this cluster's processes alone.
            f"{leaf_inbox(cluster)}.>",
        ),
        subscribe_deny=stream_mutations(leaf_api),
    )


def leaf_local_permissions(clusterset: str, cluster: str, inbox: str = INBOX) -> Permissions:
    """Leaf layout: the cluster's mcsync processes on their own leaf server.

    They write to the local outbox, read the local mirror of the hub stream (which needs
    ``allow_direct`` for direct gets), and send lease events to the log on the hub (the leaf
    link carries this cluster's alone).
    """
    check_names(clusterset, cluster)
    return Permissions(
        publish_allow=(
            outbox_subjects(clusterset, cluster),
            subjects.cluster_leases(clusterset, cluster),
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
        if not NAME.fullmatch(self.name):
            raise ValueError(f"user name {self.name!r}: use letters, digits, '-' and '_'")


def cluster_user(clusterset: str, cluster: str, login: Login) -> User:
    """The user a cluster's mcsync processes connect as; named like the cluster."""
    return User(cluster, login, cluster_permissions(clusterset, cluster))


def mirror_cluster_user(clusterset: str, cluster: str, login: Login) -> User:
    """Mirror layout: the user of a cluster's processes, in the cluster's own account."""
    return User(cluster, login, mirror_cluster_permissions(clusterset, cluster))


def observer_user(clusterset: str, login: Login, name: str = "observer") -> User:
    """The read-only user of third-party tools."""
    return User(name, login, observer_permissions(clusterset))


def admin_user(clusterset: str, login: Login, name: str = "admin") -> User:
    """The stream administrator."""
    return User(name, login, admin_permissions(clusterset))


def leaf_link_user(clusterset: str, cluster: str, login: Login, hub_domain: str = "hub") -> User:
    """The user a cluster's leaf server connects to the hub as (leaf layout)."""
    return User(f"leaf-{cluster}", login, leaf_link_permissions(clusterset, cluster, hub_domain))
