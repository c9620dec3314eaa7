"""The Multi-Cluster Services merge: many clusters' exports of one service -> one import.

Pure functions of the folded state, so every subscriber computes the same winner and the same
conditions (KEP-1645 "Global Properties"; spec items 24-40 in ``docs/mcs.md``):

* precedence: the oldest ServiceExport ``creationTimestamp`` wins; equal timestamps (they have
  one-second resolution) go to the lowest cluster id;
* stability: the winner is always recomputed from the exports that are live *now* - no
  first-observed memory. A newer export that disagrees never changes the import (the oldest still
  wins); when the oldest export is withdrawn, the next oldest takes over. This keeps replay exact:
  the import at event N depends only on the exports live at event N;
* ports: the union, merged by name then by (protocol, port), earlier exports first;
  ``PortConflict`` whenever the constituents' port lists differ, even when the union is clean;
* every other property is taken whole from the winner, with its own conflict reason; labels and
  annotations come only from ``ServiceExport.spec.exported*`` and are never unioned.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from engine.core import events as ev

ConditionStatus = Literal["True", "False", "Unknown"]

# The order reasons are joined in (the order of the API's constants).
REASON_ORDER: tuple[str, ...] = (
    "PortConflict",
    "TypeConflict",
    "SessionAffinityConflict",
    "SessionAffinityConfigConflict",
    "LabelsConflict",
    "AnnotationsConflict",
    "InternalTrafficPolicyConflict",
    "TrafficDistributionConflict",
    "IPFamilyConflict",
)

_FIELD_OF_REASON: dict[str, str] = {
    "PortConflict": "ports",
    "TypeConflict": "type",
    "SessionAffinityConflict": "sessionAffinity",
    "SessionAffinityConfigConflict": "sessionAffinityConfig",
    "LabelsConflict": "exportedLabels",
    "AnnotationsConflict": "exportedAnnotations",
    "InternalTrafficPolicyConflict": "internalTrafficPolicy",
    "TrafficDistributionConflict": "trafficDistribution",
    "IPFamilyConflict": "ipFamilies",
}


@dataclass(frozen=True, slots=True)
class Condition:
    """A status condition without its transition time (the applier keeps or sets that)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class ImportSpec:
    """The merged ServiceImport spec."""

    type: ev.ServiceType
    ports: tuple[ev.Port, ...]
    session_affinity: str
    session_affinity_timeout: int | None
    internal_traffic_policy: str | None
    traffic_distribution: str | None
    ip_families: tuple[str, ...]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ServiceView:
    """Everything the clusterset says about one ``namespace/name``.

    ``spec`` is None when no cluster exports the service validly (then there is no import).
    ``clusters`` are the contributing clusters, sorted. ``export_conditions`` has an entry for
    every cluster that has a ServiceExport, valid or not.
    """

    namespace: str
    name: str
    spec: ImportSpec | None
    clusters: tuple[str, ...]
    winner: str | None
    conflict_reasons: tuple[str, ...]
    export_conditions: Mapping[str, tuple[Condition, ...]]


def precedence(export: ev.ExportUpserted) -> tuple[datetime, str]:
    """Sort key: oldest ServiceExport first, then the lowest cluster id."""
    return (export.created, export.cluster)


def _port_key(p: ev.Port) -> tuple[str, str, int, str | None]:
    return (p.name, p.protocol, p.port, p.app_protocol)


def union_ports(ordered: list[ev.ExportUpserted]) -> tuple[ev.Port, ...]:
    """Union of the ports, by name then by (protocol, port); earlier exports win collisions."""
    names: set[str] = set()
    numbers: set[tuple[str, int]] = set()
    merged: list[ev.Port] = []
    for export in ordered:
        for port in export.ports:
            if port.name in names or (port.protocol, port.port) in numbers:
                continue
            names.add(port.name)
            numbers.add((port.protocol, port.port))
            merged.append(port)
    return tuple(merged)


def _families(export: ev.ExportUpserted) -> tuple[str, ...]:
    return export.ip_families or ("IPv4",)


def _compared(e: ev.ExportUpserted) -> dict[str, object]:
    """The value each conflict reason compares, per export."""
    return {
        "PortConflict": sorted(_port_key(p) for p in e.ports),
        "TypeConflict": e.service_type,
        "SessionAffinityConflict": e.session_affinity,
        "SessionAffinityConfigConflict": e.session_affinity_timeout,
        "LabelsConflict": e.exported_labels,
        "AnnotationsConflict": e.exported_annotations,
        "InternalTrafficPolicyConflict": e.internal_traffic_policy,
        "TrafficDistributionConflict": e.traffic_distribution,
        "IPFamilyConflict": _families(e),
    }


def _differs(ordered: list[ev.ExportUpserted]) -> dict[str, set[str]]:
    """For each conflict reason, the clusters whose value differs from the winner's."""
    winner = _compared(ordered[0])
    out: dict[str, set[str]] = {}
    for export in ordered[1:]:
        mine = _compared(export)
        for reason in REASON_ORDER:
            if mine[reason] != winner[reason]:
                out.setdefault(reason, set()).add(export.cluster)
    return out


def _valid_condition(export: ev.ExportUpserted) -> Condition:
    match export.validity:
        case "Valid":
            return Condition("Valid", "True", "Valid", "Service found and exportable")
        case "NoService":
            return Condition(
                "Valid",
                "False",
                "NoService",
                f'No Service named "{export.name}" in namespace "{export.namespace}"',
            )
        case "InvalidServiceType":
            return Condition(
                "Valid",
                "False",
                "InvalidServiceType",
                "Services of type ExternalName cannot be exported",
            )


def view(
    namespace: str,
    name: str,
    exports: Mapping[str, ev.ExportUpserted],
    admitted: AbstractSet[str] | None = None,
    members: AbstractSet[str] | None = None,
) -> ServiceView:
    """Merge one service's exports.

    Args:
        namespace: the service's namespace.
        name: the service's name.
        exports: the current export of each cluster that has a ServiceExport.
        admitted: the clusters whose endpoints count now (members whose heartbeat lease holds,
            or every member under the ``keep`` policy); None admits every exporter.
        members: the clusters that may define the service (members of the clusterset); None
            means every exporter. A member whose lease lapsed still defines the import's
            properties and precedence, so a short silence neither changes the import nor its
            VIP; it only stops contributing endpoints and leaves ``status.clusters``.
    """
    valid = [
        e
        for e in exports.values()
        if e.validity == "Valid" and (members is None or e.cluster in members)
    ]
    valid.sort(key=precedence)
    conditions: dict[str, tuple[Condition, ...]] = {}
    if not valid:
        for cluster, export in exports.items():
            conditions[cluster] = _conditions_without_import(export, admitted, members)
        return ServiceView(namespace, name, None, (), None, (), conditions)

    winner = valid[0]
    differs = _differs(valid)
    reasons = tuple(r for r in REASON_ORDER if r in differs)
    spec = ImportSpec(
        type=winner.service_type,
        ports=union_ports(valid),
        session_affinity=winner.session_affinity,
        session_affinity_timeout=winner.session_affinity_timeout,
        internal_traffic_policy=winner.internal_traffic_policy,
        traffic_distribution=winner.traffic_distribution,
        ip_families=_families(winner),
        labels=winner.exported_labels,
        annotations=winner.exported_annotations,
    )
    defining = {e.cluster for e in valid}
    contributing = tuple(sorted(c for c in defining if admitted is None or c in admitted))
    conflict = _conflict_condition(winner, reasons, differs, len(valid))
    for cluster, export in exports.items():
        if cluster not in defining:
            conditions[cluster] = _conditions_without_import(export, admitted, members)
        elif cluster not in contributing:
            conditions[cluster] = (_valid_condition(export), _LAPSED, conflict)
        else:
            conditions[cluster] = (
                _valid_condition(export),
                Condition("Ready", "True", "Exported", "Service exported to the clusterset log"),
                conflict,
            )
    return ServiceView(namespace, name, spec, contributing, winner.cluster, reasons, conditions)


_LAPSED = Condition(
    "Ready",
    "False",
    "Pending",
    "The cluster's heartbeat lease lapsed; its endpoints are withdrawn until it returns",
)


def _conflict_condition(
    winner: ev.ExportUpserted, reasons: tuple[str, ...], differs: dict[str, set[str]], total: int
) -> Condition:
    if not reasons:
        return Condition("Conflict", "False", "NoConflicts", "All exports agree")
    fields = ", ".join(_FIELD_OF_REASON[r] for r in reasons)
    disagree = set().union(*differs.values())
    created = winner.created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = (
        f"Conflicting {fields}. Using the values from the oldest ServiceExport, in cluster "
        f'"{winner.cluster}" (created {created}); '
        f"{len(disagree)}/{total} clusters disagree."
    )
    if "PortConflict" in reasons:
        message += " Ports are the union of all exports, merged by name, then protocol and port."
    return Condition("Conflict", "True", ",".join(reasons), message)


def _conditions_without_import(
    export: ev.ExportUpserted,
    admitted: AbstractSet[str] | None,
    members: AbstractSet[str] | None,
) -> tuple[Condition, ...]:
    valid = _valid_condition(export)
    if export.validity != "Valid":
        ready = Condition("Ready", "False", "Failed", f"Not exported: {valid.message}")
    elif members is not None and export.cluster not in members:
        ready = Condition(
            "Ready", "False", "Failed", "The cluster is not a member of the clusterset"
        )
    else:  # pragma: no cover - a valid member export always defines the import
        ready = _LAPSED
    return (valid, ready, Condition("Conflict", "False", "NoConflicts", "Not part of an import"))
