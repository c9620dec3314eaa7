"""Cluster inventory: members, their health, staleness, and their ClusterProfiles.

Pure rules over the folded state (KEP-4322, KEP-2149):

* a member is a cluster whose last cluster event is joined/updated;
* its control plane is ``Healthy``/``Unhealthy`` as its last heartbeat says, and ``Unknown``
  once no heartbeat arrived for the heartbeat lease L (default 30 s);
* under the ``withdraw`` staleness policy a member whose lease lapsed stops contributing
  endpoints and exports to every import, until its next heartbeat re-admits it; under ``keep``
  its last state stays;
* two publisher instances heartbeating for one cluster id within L are a duplicate id.

``now`` is always an argument: the subscriber passes its estimate of the log's clock (the
newest event time plus the time elapsed on its own monotonic clock since it arrived), so no
decision depends on clock agreement between clusters; a replay passes each event's time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from engine.core import events as ev
from engine.core import fold, mcs

StalenessPolicy = Literal["withdraw", "keep"]

CLUSTER_MANAGER: Final = "mcsync"
LABEL_CLUSTER_MANAGER: Final = "x-k8s.io/cluster-manager"
LABEL_CLUSTERSET: Final = "multicluster.x-k8s.io/clusterset"
PROFILE_API: Final = "multicluster.x-k8s.io/v1alpha1"
MAX_PROPERTY_VALUE: Final = 1024


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
    if info.access_providers:
        status["accessProviders"] = [_access(a) for a in info.access_providers]
    return {
        "apiVersion": PROFILE_API,
        "kind": "ClusterProfile",
        "metadata": {
            "name": cluster,
            "namespace": namespace,
            "labels": {LABEL_CLUSTER_MANAGER: CLUSTER_MANAGER, LABEL_CLUSTERSET: info.clusterset},
        },
        "spec": {
            "displayName": info.display_name or cluster,
            "clusterManager": {"name": CLUSTER_MANAGER},
        },
        "status": status,
    }


def _access(a: ev.AccessProvider) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": a.server}
    if a.certificate_authority_data:
        cluster["certificate-authority-data"] = a.certificate_authority_data
    return {"name": a.name, "cluster": cluster}


def members(state: fold.ClusterSetState) -> Mapping[str, fold.ClusterRecord]:
    return {c: r for c, r in state.clusters.items() if is_member(r)}
