"""nats-server configuration text for a hub or a leaf, from the users of :mod:`.access`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from engine.core import subjects
from engine.natsconfig import access

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


def _login(login: access.Login, allow_plain: bool) -> str:
    if login.kind == "nkey":
        return f"nkey: {_q(login.value)}"
    if login.kind == "variable":
        return f"password: ${login.value}"
    if login.kind == "plain" and not allow_plain:
        raise ValueError(
            "refusing to render a clear-text password; give a bcrypt hash "
            "(allow_plain=True is for local tests only)"
        )
    return f"password: {_q(login.value)}"


def render_user(user: access.User, indent: str = "", allow_plain: bool = False) -> list[str]:
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
    users: Sequence[access.User], account: str = access.ACCOUNT, allow_plain: bool = False
) -> str:
    """The ``accounts`` block: one JetStream-enabled account holding ``users``.

    This is the part to append to a server configuration that already has its listeners and
    ``jetstream`` block (e.g. ``NatsServer(extra_config=...)``).
    """
    if not access.NAME.fullmatch(account):
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
class AccountLimits:
    """What one cluster's account may take of the hub (mirror layout).

    Whatever a cluster does within its account (a consumer per second, a full disk) stops at
    these; the log's account and every other cluster's are untouched.
    """

    max_consumers: int = 128
    """Each subscriber, status or replay holds one consumer on the mirror; tools a few more."""
    max_file: str = "1G"
    """The mirror holds the whole log: give it at least the log's size. The server reserves
    this for the account: the clusters' sum must fit the hub's ``max_file_store``."""
    max_mem: str = "16M"
    """Memory-stored consumers of replays; also reserved on the server."""
    max_streams: int = 1
    """The mirror."""


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size_bytes(text: str) -> int:
    """A nats-server size such as ``10G`` or ``256M`` in bytes."""
    m = re.fullmatch(r"(\d+)([KMGT]?)B?", text.strip().upper())
    if m is None:
        raise ValueError(f"size {text!r}: digits and an optional K, M, G or T")
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class Hub:
    """The hub nats-server of one clusterset (clients connect to it directly)."""

    clusterset: str
    clusters: Mapping[str, access.Login]
    """Cluster id -> login of that cluster's user."""
    admin: access.Login
    observer: access.Login | None = None
    leaf_links: Mapping[str, access.Login] = field(default_factory=dict)
    """Cluster id -> login of its leaf server's connection (leaf layout; empty: no leafnodes)."""
    account: str = access.ACCOUNT
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
    mirrors: bool = False
    """The mirror layout: each cluster's user in an account of its own, reading a mirror of the
    log there, its appends passing through to the log (see :func:`render_mirror_accounts`)."""
    cluster_limits: AccountLimits = field(default_factory=AccountLimits)
    """JetStream limits of each cluster's account (mirror layout)."""
    leaf_advertise: bool = True
    """Tell leaves the hub's other leafnode addresses (false behind a proxy or load balancer
    that leaves must always go through)."""
    includes: tuple[str, ...] = ()
    """Files the configuration includes first, relative to its own directory (e.g. the
    definitions of the variables that :func:`access.password_variable` logins name)."""


def hub_users(hub: Hub) -> list[access.User]:
    """Every user of the hub's account, admin first, then clusters, observer, leaf links.

    In the mirror layout the clusters' users are in accounts of their own, not here.
    """
    users = [access.admin_user(hub.clusterset, hub.admin)]
    if not hub.mirrors:
        users += [
            access.cluster_user(hub.clusterset, c, hub.clusters[c]) for c in sorted(hub.clusters)
        ]
    if hub.observer is not None:
        users.append(access.observer_user(hub.clusterset, hub.observer))
    users += [
        access.leaf_link_user(hub.clusterset, c, hub.leaf_links[c], hub.domain)
        for c in sorted(hub.leaf_links)
    ]
    return users


def _header(title: str, notes: Sequence[str]) -> list[str]:
    lines = [f"# {title}", "# Rendered by engine.natsconfig; change the inputs and re-render."]
    lines += [f"# {n}" if n else "#" for n in notes]
    return [*lines, ""]


def render_hub(hub: Hub, allow_plain: bool = False, notes: Sequence[str] = ()) -> str:
    """A complete nats-server configuration for the hub of ``hub.clusterset``."""
    access.check_names(hub.clusterset)
    for c in (*hub.clusters, *hub.leaf_links):
        access.check_names(hub.clusterset, c)
    subjects.check_label("JetStream domain", hub.domain)
    lines = _header(f"nats-server hub of mcsync clusterset {hub.clusterset!r}", notes)
    for path in hub.includes:
        if not path or any(c in path for c in '"\\\n\r'):
            raise ValueError(f"include path {path!r}: no quotes, backslashes or line breaks")
        lines.append(f"include {_q(path)}")
    if hub.includes:
        lines.append("")
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
        if not hub.leaf_advertise:
            lines.append("  no_advertise: true")
        lines += _tls(hub.leaf_tls, "  ")
        lines += ["}", ""]
    if hub.mirrors:
        lines.append(render_mirror_accounts(hub, allow_plain).rstrip("\n"))
    else:
        lines.append(render_accounts(hub_users(hub), hub.account, allow_plain).rstrip("\n"))
    return "\n".join(lines) + "\n"


def _service(subject: str, accounts: Sequence[str], indent: str) -> str:
    names = ", ".join(_q(a) for a in accounts)
    return f"{indent}{{ service: {_q(subject)}, accounts: [{names}] }}"


def render_mirror_accounts(hub: Hub, allow_plain: bool = False) -> str:
    """The ``accounts`` block of the mirror layout.

    The log's account holds the stream, the administrator, the observer and leaf links. Each
    cluster has an account with its user and a JetStream limit of its own; the log's account
    exports to it, to it alone: its own event subjects and dead-letter subject (as services: the
    stream's acks go back as replies), and what its mirror needs (consumer creation and flow
    control on the log; the deliveries, under a prefix of its own). What a cluster creates in
    its account counts against that account only.
    """
    account = hub.account
    n = len(hub.clusters)
    for what, each, total in (
        ("max_file", hub.cluster_limits.max_file, hub.max_file_store),
        ("max_mem", hub.cluster_limits.max_mem, hub.max_memory_store),
    ):
        if n * size_bytes(each) >= size_bytes(total):
            raise ValueError(
                f"{n} cluster accounts x {what} {each} leave nothing of the server's {total} "
                "for the log: the server reserves each account's limit"
            )
    if not access.NAME.fullmatch(account):
        raise ValueError(f"account name {account!r}: use letters, digits, '-' and '_'")
    log = access.stream(hub.clusterset)
    clusters = sorted(hub.clusters)
    accounts = {c: access.cluster_account(c) for c in clusters}
    if account in accounts.values() or len(set(accounts.values())) != len(accounts):
        raise ValueError(f"cluster accounts {sorted(accounts.values())} collide")
    everyone = [accounts[c] for c in clusters]
    shared = (
        # The mirror's consumer on the log (an ordered push consumer: no name).
        f"{access.API}.CONSUMER.CREATE.{log}",
        f"$JS.FC.{log}.>",
    )
    lines = ["accounts {", f"  {account}: {{", "    jetstream: enabled", "    users: ["]
    for user in hub_users(hub):
        lines += render_user(user, "      ", allow_plain)
    lines += ["    ]", "    exports: ["]
    for c in clusters:
        only = [accounts[c]]
        lines.append(_service(subjects.cluster_subjects(hub.clusterset, c), only, "      "))
        lines.append(_service(access.dead_letter_subject(hub.clusterset, c), only, "      "))
        deliver = access.mirror_deliver(hub.clusterset, c) + ".>"
        lines.append(f"      {{ stream: {_q(deliver)}, accounts: [{_q(accounts[c])}] }}")
    if clusters:
        lines += [_service(subject, everyone, "      ") for subject in shared]
    lines += ["    ]", "  }"]
    limits = hub.cluster_limits
    for c in clusters:
        user = access.mirror_cluster_user(hub.clusterset, c, hub.clusters[c])
        imports = [
            (subjects.cluster_subjects(hub.clusterset, c), None),
            (access.dead_letter_subject(hub.clusterset, c), None),
            (shared[0], f"{access.LOG_API}.CONSUMER.CREATE.{log}"),
            (shared[1], None),
        ]
        lines += [
            f"  {accounts[c]}: {{",
            "    jetstream: {",
            f"      max_consumers: {limits.max_consumers}",
            f"      max_file: {limits.max_file}",
            f"      max_mem: {limits.max_mem}",
            f"      max_streams: {limits.max_streams}",
            "    }",
            "    users: [",
            *render_user(user, "      ", allow_plain),
            "    ]",
            "    imports: [",
        ]
        for subject, to in imports:
            mapped = f", to: {_q(to)}" if to else ""
            lines.append(
                f"      {{ service: {{ account: {_q(account)}, subject: {_q(subject)} }}{mapped} }}"
            )
        deliver = access.mirror_deliver(hub.clusterset, c) + ".>"
        lines += [
            f"      {{ stream: {{ account: {_q(account)}, subject: {_q(deliver)} }} }}",
            "    ]",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Leaf:
    """A leaf nats-server in one Kubernetes cluster, with its own JetStream domain."""

    clusterset: str
    cluster: str
    hub_urls: tuple[str, ...]
    """Leafnode URLs of the hub, e.g. ``nats-leaf://hub.example.com:7422``; no credentials."""
    local: access.Login
    """Login of the user the cluster's mcsync processes connect to this leaf as."""
    admin: access.Login
    """Login of the leaf's stream administrator (creates the outbox and the mirror)."""
    nkey_seed_env: str = "MCSYNC_LEAF_NKEY_SEED"
    """Environment variable holding the leaf link's nkey seed (from a Secret, never a file
    in the repository)."""
    account: str = access.ACCOUNT
    listen: str = "0.0.0.0:4222"
    monitor: str | None = "0.0.0.0:8222"
    store_dir: str = "/data/jetstream"
    max_file_store: str = "10G"
    max_memory_store: str = "256M"
    hub_tls: Tls | None = None
    """Client side of the leaf link's TLS (the hub's leafnode listener verifies the cert)."""


def render_leaf(leaf: Leaf, allow_plain: bool = False, notes: Sequence[str] = ()) -> str:
    """A leaf nats-server configuration (leaf layout; see the module docstring)."""
    access.check_names(leaf.clusterset, leaf.cluster)
    if not access.ENV_NAME.fullmatch(leaf.nkey_seed_env):
        raise ValueError(f"{leaf.nkey_seed_env!r} is not an environment variable name")
    if not leaf.hub_urls or any("@" in u for u in leaf.hub_urls):
        raise ValueError("give hub URLs without credentials; the link uses an nkey")
    users = [
        access.admin_user(leaf.clusterset, leaf.admin),
        access.User(
            leaf.cluster, leaf.local, access.leaf_local_permissions(leaf.clusterset, leaf.cluster)
        ),
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
        clusters={c: access.placeholder_hash(c) for c in EXAMPLE_CLUSTERS},
        admin=access.placeholder_hash("admin"),
        observer=access.placeholder_hash("observer"),
        leaf_links=(
            {c: access.placeholder_nkey(f"leaf{c}") for c in EXAMPLE_CLUSTERS}
            if with_leafnodes
            else {}
        ),
        mirrors=True,
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
                "Clusters connect to this server directly, each as its own user in an account",
                "of its own (the mirror layout: run mcsync with --log-layout mirror). What a",
                "cluster creates there counts against its account's limits only.",
                "",
                *_HOW_TO_HASH,
            ),
        ),
        "hub-leafnodes.conf": render_hub(
            example_hub(with_leafnodes=True),
            notes=(
                "The hub of the leaf layout (provision it with `mcsync stream ensure",
                "--leaf-sources east,west`): clusters may still connect directly (mirror layout),",
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
                local=access.placeholder_hash("east"),
                admin=access.placeholder_hash("eastadmin"),
                hub_tls=Tls(
                    "/etc/nats/leaf-tls/tls.crt",
                    "/etc/nats/leaf-tls/tls.key",
                    "/etc/nats/leaf-tls/ca.crt",
                ),
            ),
            notes=(
                "The leaf server of cluster east (render again with cluster='west' for west).",
                "Provision its streams with `mcsync stream ensure --leaf east` as its admin, and",
                "run the cluster's mcsync with --log-layout leaf (docs/deploy.md).",
                "",
                *_HOW_TO_HASH,
            ),
        ),
    }


# --- the hub of compose.yaml ----------------------------------------------------------------

COMPOSE_CLUSTERSET: Final = "local"
COMPOSE_CLUSTERS: Final = ("east", "west")
COMPOSE_ADMIN: Final = "admin"
COMPOSE_INCLUDE: Final = "auth/passwords.conf"
"""Where compose.yaml's hub finds its password hashes, next to its configuration: a volume
that ``mcsync setup nats-credentials`` fills at the first start."""


def compose_hub() -> Hub:
    """The hub of compose.yaml: the mirror layout of deploy/nats/hub.conf, a user per cluster,
    every password a variable defined in :data:`COMPOSE_INCLUDE` (no TLS: the server is
    reachable on the compose network and on the host's loopback only)."""
    return Hub(
        clusterset=COMPOSE_CLUSTERSET,
        clusters={
            c: access.password_variable(access.password_variable_name(c)) for c in COMPOSE_CLUSTERS
        },
        admin=access.password_variable(access.password_variable_name(COMPOSE_ADMIN)),
        mirrors=True,
        includes=(COMPOSE_INCLUDE,),
        max_file_store="4G",
    )


def compose_config() -> str:
    """The text of deploy/compose/nats.conf."""
    return render_hub(
        compose_hub(),
        notes=(
            "The NATS server of compose.yaml: the mirror layout of deploy/nats/hub.conf, with",
            "clusters east and west, each as its own user in an account of its own.",
            f"No password is in this file: each is a variable that {COMPOSE_INCLUDE} defines",
            "as a bcrypt hash; `mcsync setup nats-credentials` writes it, with random passwords,",
            "at the first `docker compose up` (a volume, never the repository).",
        ),
    )
