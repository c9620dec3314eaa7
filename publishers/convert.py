"""Kubernetes objects -> events: what one cluster says about its exports and endpoints.

Synchronous and side-effect free, so the publisher shell stays a loop of watch, convert,
compare, append.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from engine.core import events as ev
from engine.core import plan

Obj = dict[str, Any]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def export_event(cluster: str, export: Obj, service: Obj | None) -> ev.ExportUpserted:
    """The whole exported state of one ServiceExport and its Service (None if missing)."""
    meta = export["metadata"]
    spec = export.get("spec") or {}
    base: dict[str, Any] = {
        "cluster": cluster,
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "created": parse_time(meta["creationTimestamp"]),
    }
    if service is None:
        return ev.ExportUpserted(**base, validity="NoService")
    sspec = service.get("spec") or {}
    if sspec.get("type") == "ExternalName":
        return ev.ExportUpserted(**base, validity="InvalidServiceType")
    headless = sspec.get("clusterIP") == "None"
    ports = tuple(
        ev.Port(
            port=int(p["port"]),
            protocol=cast(ev.Protocol, p.get("protocol", "TCP")),
            name=p.get("name", ""),
            app_protocol=p.get("appProtocol"),
        )
        for p in sspec.get("ports") or []
    )
    timeout = (sspec.get("sessionAffinityConfig") or {}).get("clientIP", {}).get("timeoutSeconds")
    affinity = sspec.get("sessionAffinity", "None")
    return ev.ExportUpserted(
        **base,
        service_type="Headless" if headless else "ClusterSetIP",
        ports=ports,
        session_affinity=affinity,
        session_affinity_timeout=int(timeout)
        if timeout is not None and affinity == "ClientIP"
        else None,
        internal_traffic_policy=sspec.get("internalTrafficPolicy"),
        traffic_distribution=sspec.get("trafficDistribution"),
        ip_families=tuple(sspec.get("ipFamilies") or ()),
        exported_labels=dict(spec.get("exportedLabels") or {}),
        exported_annotations=dict(spec.get("exportedAnnotations") or {}),
    )


def is_source_slice(eps: Obj) -> bool:
    """A native EndpointSlice of a local Service (not one mcsync or another MCS tool wrote)."""
    labels = eps.get("metadata", {}).get("labels") or {}
    return (
        plan.LABEL_K8S_SERVICE_NAME in labels
        and plan.LABEL_SERVICE_NAME not in labels
        and labels.get(plan.LABEL_SLICE_MANAGED_BY) != plan.MANAGED_BY
    )


def slice_event(cluster: str, eps: Obj) -> ev.SliceUpserted:
    meta = eps["metadata"]
    endpoints = []
    for e in eps.get("endpoints") or []:
        cond = e.get("conditions") or {}
        endpoints.append(
            ev.Endpoint(
                addresses=tuple(e.get("addresses") or ()),
                ready=cond.get("ready"),
                serving=cond.get("serving"),
                terminating=cond.get("terminating"),
                hostname=e.get("hostname"),
                zone=e.get("zone"),
                node_name=e.get("nodeName"),
            )
        )
    ports = tuple(
        ev.EndpointPort(
            port=p.get("port"),
            protocol=cast(ev.Protocol, p.get("protocol", "TCP")),
            name=p.get("name") or "",
            app_protocol=p.get("appProtocol"),
        )
        for p in eps.get("ports") or []
    )
    return ev.SliceUpserted(
        cluster=cluster,
        namespace=meta["namespace"],
        service=meta["labels"][plan.LABEL_K8S_SERVICE_NAME],
        name=meta["name"],
        address_type=cast(ev.AddressType, eps.get("addressType", "IPv4")),
        endpoints=tuple(endpoints),
        ports=ports,
    )
