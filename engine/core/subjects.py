"""The subject grammar of the log: the public address of every key.

Every key of the clusterset lives on one subject, and each cluster writes only below
``mcsync.<set>.<cluster>.>`` (NATS permissions enforce it). Object names may contain characters
that NATS subject tokens cannot (``.``, ``*``, ``>``, white space), so name tokens are escaped
reversibly: every byte outside ``[A-Za-z0-9_-]`` becomes ``~XX`` (upper-case hex of its UTF-8
bytes). Kubernetes names never contain ``~``, so plain names read the same in subjects.
"""

from __future__ import annotations

import functools
import re
from typing import Literal, NamedTuple

PREFIX = "mcsync"

Kind = Literal["export", "slice", "cluster", "sync", "heartbeat", "lease"]

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPED = re.compile(r"~([0-9A-F]{2})")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def escape(name: str) -> str:
    """Escape one name into a subject token (reversible, see :func:`unescape`)."""
    if not name:
        raise ValueError("an empty name cannot be a subject token")
    if _PLAIN.fullmatch(name):
        return name  # the common case: nothing to escape
    out: list[str] = []
    for byte in name.encode():
        out.append(chr(byte) if byte in _SAFE else f"~{byte:02X}")
    return "".join(out)


def unescape(token: str) -> str:
    """Reverse :func:`escape`."""
    if "~" not in token:
        return token
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "~":
            m = _ESCAPED.match(token, i)
            if m is None:
                raise ValueError(f"bad escape in subject token {token!r}")
            raw.append(int(m.group(1), 16))
            i += 3
        else:
            raw.append(ord(token[i]))
            i += 1
    return raw.decode()


def is_dns_label(value: str) -> bool:
    """True for an RFC-1123 DNS label: lower-case, at most 63 characters."""
    return bool(_DNS_LABEL.fullmatch(value))


@functools.lru_cache(maxsize=4096)
def _is_known_label(value: str) -> bool:
    """:func:`is_dns_label`, remembered: a clusterset has few clusters, named on every subject."""
    return is_dns_label(value)


def check_label(what: str, value: str) -> str:
    """Return ``value`` if it is a DNS label, else raise ``ValueError`` naming ``what``."""
    if not is_dns_label(value):
        raise ValueError(
            f"{what} {value!r} is not a valid RFC-1123 DNS label "
            "(lower-case letters, digits and '-', at most 63 characters)"
        )
    return value


def stream_name(clusterset: str) -> str:
    """The JetStream stream that holds one clusterset's log."""
    return "MCSYNC_" + clusterset.upper().replace("-", "_")


def all_subjects(clusterset: str) -> str:
    """The wildcard of the whole clusterset."""
    return f"{PREFIX}.{clusterset}.>"


def cluster_subjects(clusterset: str, cluster: str) -> str:
    """The wildcard one cluster may publish on."""
    return f"{PREFIX}.{clusterset}.{cluster}.>"


def export(clusterset: str, cluster: str, namespace: str, name: str) -> str:
    return f"{PREFIX}.{clusterset}.{cluster}.export.{escape(namespace)}.{escape(name)}"


def endpoint_slice(clusterset: str, cluster: str, namespace: str, service: str, name: str) -> str:
    return (
        f"{PREFIX}.{clusterset}.{cluster}.slice."
        f"{escape(namespace)}.{escape(service)}.{escape(name)}"
    )


def cluster(clusterset: str, cluster_id: str) -> str:
    return f"{PREFIX}.{clusterset}.{cluster_id}.cluster"


def sync(clusterset: str, cluster_id: str) -> str:
    return f"{PREFIX}.{clusterset}.{cluster_id}.sync"


def heartbeat(clusterset: str, cluster_id: str) -> str:
    return f"{PREFIX}.{clusterset}.{cluster_id}.heartbeat"


def lease(clusterset: str, cluster_id: str, name: str) -> str:
    return f"{PREFIX}.{clusterset}.{cluster_id}.lease.{escape(name)}"


def cluster_leases(clusterset: str, cluster_id: str) -> str:
    """Every lease subject of one cluster."""
    return f"{PREFIX}.{clusterset}.{cluster_id}.lease.>"


def lease_any_cluster(clusterset: str, name: str) -> str:
    """The wildcard over every cluster's subject of one lease (the compare-and-set scope)."""
    return f"{PREFIX}.{clusterset}.*.lease.{escape(name)}"


class Parsed(NamedTuple):
    """A subject taken apart: the writer's cluster, the kind of key and its name parts.

    A named tuple: one is made for every new subject the fold sees."""

    clusterset: str
    cluster: str
    kind: Kind
    parts: tuple[str, ...]


_ARITY: dict[str, int] = {
    "export": 2,
    "slice": 3,
    "cluster": 0,
    "sync": 0,
    "heartbeat": 0,
    "lease": 1,
}


def _canonical(token: str, subject: str) -> str:
    """The name a token with escapes stands for, if it is that name's canonical escaping."""
    try:
        name = unescape(token)
        if escape(name) == token:
            return name
    except ValueError:
        pass
    raise ValueError(f"not an mcsync subject (non-canonical name token): {subject!r}")


@functools.lru_cache(maxsize=65536)
def parse(subject: str) -> Parsed:
    """Parse a subject of the grammar; raise ``ValueError`` for anything else.

    Cached: a clusterset has a bounded set of live subjects and every event on one is parsed.
    """
    tokens = subject.split(".")
    if len(tokens) < 4 or tokens[0] != PREFIX:
        raise ValueError(f"not an mcsync subject: {subject!r}")
    if not (_is_known_label(tokens[1]) and _is_known_label(tokens[2])):
        raise ValueError(f"not an mcsync subject (clusterset or cluster token): {subject!r}")
    kind = tokens[3]
    arity = _ARITY.get(kind)
    if arity is None or len(tokens) != 4 + arity:
        raise ValueError(f"not an mcsync subject: {subject!r}")
    # One key, one subject: only the canonical escaping of a name is accepted, so two subjects
    # never fold into the same key, and wildcards or empty tokens are never keys. A token of
    # safe characters only is canonical and reads as itself.
    parts = tuple(t if _PLAIN.fullmatch(t) else _canonical(t, subject) for t in tokens[4:])
    return Parsed(tokens[1], tokens[2], kind, parts)  # type: ignore[arg-type]
