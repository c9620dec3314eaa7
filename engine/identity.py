"""Who this cluster is: its id and clusterset, read from the About API (KEP-2149).

``ClusterProperty cluster.clusterset.k8s.io`` holds the cluster id and ``clusterset.k8s.io`` the
clusterset. mcsync uses the id in NATS subjects and MCS DNS names, so it accepts only the safe
subset every consumer understands: one lower-case RFC-1123 DNS label (CoreDNS's multicluster
plugin cannot resolve an id with a dot). A publisher or subscriber refuses to start, with a
message saying what to create, when either property is missing or malformed.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine import kube
from engine.core import subjects
from engine.core.errors import ConfigError

CLUSTER_ID_PROPERTY = "cluster.clusterset.k8s.io"
CLUSTERSET_PROPERTY = "clusterset.k8s.io"


@dataclass(frozen=True, slots=True)
class Identity:
    cluster: str
    clusterset: str


def _value(obj: kube.Obj | None) -> str | None:
    if obj is None:
        return None
    value = obj.get("spec", {}).get("value")
    return str(value) if value is not None else None


def check(cluster: str | None, clusterset: str | None, expected_set: str | None = None) -> Identity:
    """Validate the two property values (pure; :func:`read` fetches them)."""
    if cluster is None:
        raise ConfigError(
            f"this cluster has no ClusterProperty {CLUSTER_ID_PROPERTY!r}: create one whose "
            "spec.value is the cluster id (a DNS label, e.g. the kube-system namespace UID "
            "or 'cluster-1'), after installing the about.k8s.io CRD from deploy/crds"
        )
    if clusterset is None:
        raise ConfigError(
            f"this cluster has no ClusterProperty {CLUSTERSET_PROPERTY!r}: it is not a member "
            "of any clusterset; create it with spec.value set to the clusterset name to join"
        )
    try:
        subjects.check_label("cluster id", cluster)
        subjects.check_label("clusterset name", clusterset)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if expected_set is not None and clusterset != expected_set:
        raise ConfigError(
            f"this cluster belongs to clusterset {clusterset!r} ({CLUSTERSET_PROPERTY}), "
            f"but mcsync was configured for {expected_set!r}"
        )
    return Identity(cluster, clusterset)


async def read(k: kube.Kube, expected_set: str | None = None) -> Identity:
    """Read and validate this cluster's identity from its ClusterProperties."""
    cluster = _value(await k.get(kube.CLUSTER_PROPERTIES, None, CLUSTER_ID_PROPERTY))
    clusterset = _value(await k.get(kube.CLUSTER_PROPERTIES, None, CLUSTERSET_PROPERTY))
    return check(cluster, clusterset, expected_set)


async def write(k: kube.Kube, cluster: str, clusterset: str) -> None:
    """Create or update both properties (for local clustersets and tests)."""
    for name, value in ((CLUSTER_ID_PROPERTY, cluster), (CLUSTERSET_PROPERTY, clusterset)):
        await k.apply(
            kube.CLUSTER_PROPERTIES,
            {
                "apiVersion": kube.CLUSTER_PROPERTIES.api_version,
                "kind": "ClusterProperty",
                "metadata": {"name": name},
                "spec": {"value": value},
            },
        )
