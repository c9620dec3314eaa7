"""Cluster inventory: members, their health, staleness, and their ClusterProfiles.

Pure rules over the folded state (KEP-4322, KEP-2149):

* a member is a cluster whose last cluster event is joined/updated;
* its control plane is ``Healthy``/``Unhealthy`` as its last heartbeat says, and ``Unknown``
  once no heartbeat arrived for the heartbeat lease L (default 30 s);
* under the ``withdraw`` staleness policy a member whose lease lapsed stops contributing
  endpoints and exports to every import, until its next heartbeat re-admits it; under ``keep``
  its last state stays;
* two publisher instances heartbeating for one cluster id within L are a duplicate id;
* a profile is valid at both served versions of ClusterProfile (``v1alpha1`` and ``v1alpha2``):
  access providers a v1alpha2 apiserver would refuse are left out, and said so in a condition,
  rather than letting one bad advertisement cost the member its whole status.

``now`` is always an argument: the subscriber passes its estimate of the log's clock (the
newest event time plus the time elapsed on its own monotonic clock since it arrived), so no
decision depends on clock agreement between clusters; a replay passes each event's time.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from engine.core import events as ev
from engine.core import fold, mcs

StalenessPolicy = Literal["withdraw", "keep"]

CLUSTER_MANAGER: Final = "mcsync"
LABEL_CLUSTER_MANAGER: Final = "x-k8s.io/cluster-manager"
LABEL_CLUSTERSET: Final = "multicluster.x-k8s.io/clusterset"
LABEL_INVENTORY_MEMBER_ID: Final = "multicluster.x-k8s.io/inventory-member-id"
PROFILE_API: Final = "multicluster.x-k8s.io/v1alpha1"
"""The version mcsync writes: the storage version, served by every ClusterProfile CRD in the
wild (upstream v0.1 and v0.2, OCM's copy); the objects are valid at ``v1alpha2`` as well."""
MAX_PROPERTY_VALUE: Final = 1024
MAX_ACCESS_PROVIDERS: Final = 64
MAX_URL: Final = 2048
EXEC_EXTENSION: Final = "client.authentication.k8s.io/exec"
"""The reserved extension whose payload a consumer passes to its exec credential plugin as
``ExecCredential.spec.cluster.config`` (KEP-4322, cluster-inventory-api ``pkg/access``)."""


@dataclass(frozen=True, slots=True)
class MemberHealth:
    status: mcs.ConditionStatus
    reason: str
    message: str


def is_member(rec: fold.ClusterRecord) -> bool:
    return rec.info is not None and not rec.left


def health(
    rec: fold.ClusterRecord, now: datetime, lease: timedelta, since: datetime | None = None
) -> MemberHealth:
    """The ``ControlPlaneHealthy`` condition of one member at ``now``.

    ``since``: the log came back at this time after a silence of its own (its server away), so
    no member's silence counts before it: the log held nothing from anyone.
    """
    if rec.last_heartbeat is None or rec.last_heartbeat_at is None:
        return MemberHealth("Unknown", "NoHeartbeat", "No heartbeat received from the member yet")
    last = rec.last_heartbeat_at if since is None else max(rec.last_heartbeat_at, since)
    age = now - last
    if age > lease:
        return MemberHealth(
            "Unknown",
            "HeartbeatLeaseExpired",
            f"No heartbeat for {age.total_seconds():.0f}s (lease {lease.total_seconds():.0f}s); "
            "its endpoints are handled by the staleness policy",
        )
    hb = rec.last_heartbeat
    if hb.health == "Healthy":
        return MemberHealth("True", hb.reason or "APIServerReady", hb.message or "API server ready")
    return MemberHealth(
        "False", hb.reason or "APIServerNotReady", hb.message or "API server not ready"
    )


def admitted(
    state: fold.ClusterSetState,
    now: datetime,
    lease: timedelta,
    policy: StalenessPolicy,
    since: datetime | None = None,
) -> frozenset[str]:
    """The clusters allowed to contribute exports and endpoints at ``now``."""
    out = set()
    for cluster, rec in state.clusters.items():
        if rec.left:
            continue
        if policy == "keep" or health(rec, now, lease, since).status != "Unknown":
            out.add(cluster)
    return frozenset(out)


def live_instances(rec: fold.ClusterRecord, now: datetime, lease: timedelta) -> list[str]:
    """Publisher instances that heartbeated for this cluster id within the lease, sorted."""
    return sorted(i for i, t in rec.instances.items() if now - t <= lease)


def duplicate(rec: fold.ClusterRecord, now: datetime, lease: timedelta) -> bool:
    return len(live_instances(rec, now, lease)) > 1


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def profile(
    cluster: str,
    rec: fold.ClusterRecord,
    namespace: str,
    now: datetime,
    lease: timedelta,
    since: datetime | None = None,
) -> dict[str, Any]:
    """The desired ClusterProfile of one member (spec and status, without transition times)."""
    info = rec.info
    assert info is not None
    h = health(rec, now, lease, since)
    conditions: list[dict[str, Any]] = [
        {
            "type": "ControlPlaneHealthy",
            "status": h.status,
            "reason": h.reason,
            "message": h.message,
        },
        {
            "type": "Joined",
            "status": "True",
            "reason": "ClusterJoined",
            "message": f"Member of clusterset {info.clusterset!r} since the log recorded its join",
        },
    ]
    if duplicate(rec, now, lease):
        ids = ", ".join(live_instances(rec, now, lease))
        conditions.append(
            {
                "type": "mcsync.io/UniqueClusterID",
                "status": "False",
                "reason": "DuplicateClusterID",
                "message": f"Several publishers claim this cluster id: {ids}; only one publishes",
            }
        )
    access, refused = access_providers(cluster, info.access_providers)
    if refused:
        conditions.append(
            {
                "type": "mcsync.io/ValidAccessProviders",
                "status": "False",
                "reason": "AccessProviderRefused",
                "message": _bounded("Left out of accessProviders: " + "; ".join(refused)),
            }
        )
    observed = _stamp(info.observed) if info.observed else None
    properties = []
    for name, value in sorted(info.properties.items()):
        item: dict[str, Any] = {"name": name, "value": value[:MAX_PROPERTY_VALUE]}
        if observed:
            item["lastObservedTime"] = observed
        properties.append(item)
    status: dict[str, Any] = {
        "version": {"kubernetes": info.kubernetes_version} if info.kubernetes_version else {},
        "properties": properties,
        "conditions": conditions,
    }
    if access:
        status["accessProviders"] = access
    return {
        "apiVersion": PROFILE_API,
        "kind": "ClusterProfile",
        "metadata": {
            "name": cluster,
            "namespace": namespace,
            "labels": {
                LABEL_CLUSTER_MANAGER: CLUSTER_MANAGER,
                LABEL_CLUSTERSET: info.clusterset,
                # The cluster id is a DNS label (subjects.check_label), so a valid label value,
                # and it never changes while the cluster is a member: what the label asks for.
                LABEL_INVENTORY_MEMBER_ID: cluster,
            },
        },
        "spec": {
            "displayName": info.display_name or cluster,
            "clusterManager": {"name": CLUSTER_MANAGER},
        },
        "status": status,
    }


def access_providers(
    cluster: str, advertised: Sequence[ev.AccessProvider]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The ``accessProviders`` of a member's profile, and why any advertised one was left out.

    Each carries the exec extension ``{"clusterName": <cluster id>}``, so one consumer
    configuration serves every member: the plugin learns from it which member's credentials to
    return (``mcsync credentials`` reads the token file of that name; cluster-inventory-api's
    ``secretreader`` plugin reads the Secret of that name). Only what ``v1alpha2`` accepts is
    kept: a name of 1-253 characters, unique; a server URL with a host; CA data in base64; at
    most 64 providers.
    """
    kept: list[dict[str, Any]] = []
    refused: list[str] = []
    names: set[str] = set()
    for a in advertised:
        problem = _access_problem(a, names)
        if problem is None and len(kept) == MAX_ACCESS_PROVIDERS:
            problem = f"more than {MAX_ACCESS_PROVIDERS} providers"
        if problem is not None:
            refused.append(f"{a.name[:64]!r}: {problem}")
            continue
        names.add(a.name)
        conn: dict[str, Any] = {"server": a.server}
        if a.certificate_authority_data:
            conn["certificate-authority-data"] = a.certificate_authority_data
        conn["extensions"] = [{"name": EXEC_EXTENSION, "extension": {"clusterName": cluster}}]
        kept.append({"name": a.name, "cluster": conn})
    return kept, refused


def _access_problem(a: ev.AccessProvider, names: set[str]) -> str | None:
    if not 1 <= len(a.name) <= 253:
        return "a name must have 1 to 253 characters"
    if a.name in names:
        return "a second provider of that name"
    if not valid_server(a.server):
        return "server is not an http(s) URL with a host"
    if a.certificate_authority_data is not None:
        try:
            base64.b64decode(a.certificate_authority_data, validate=True)
        except (binascii.Error, ValueError):
            return "certificate-authority-data is not base64"
    return None


def valid_server(url: str) -> bool:
    """Whether ``url`` is an API server address every ClusterProfile version accepts.

    Narrower than the CRD's rule (any absolute URL with a host): http or https only, printable
    ASCII, a numeric port if any, at most 2048 characters.
    """
    if not url or len(url) > MAX_URL or not url.isascii() or not url.isprintable():
        return False
    if any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _bounded(message: str, limit: int = 2048) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


def members(state: fold.ClusterSetState) -> Mapping[str, fold.ClusterRecord]:
    return {c: r for c, r in state.clusters.items() if is_member(r)}
