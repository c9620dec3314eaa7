"""Plan: the objects one cluster should hold, given the clusterset's merged view.

Pure functions from (merged services, source endpoints, what exists locally) to desired
Kubernetes objects as plain dicts, plus the comparison that decides whether a write is needed.
The subscriber applies what this module returns; nothing here performs I/O or reads a clock.

Objects mcsync owns in each cluster, for every service exported anywhere in the clusterset:

* the ``ServiceImport`` (spec and status), only where the namespace exists;
* for ``ClusterSetIP`` imports, the derived Service of the reference implementation
  (``derived-`` + 10 characters of base32hex(sha256("ns/name"))), a selector-less ClusterIP
  Service whose ClusterIP becomes the import's ``spec.ips`` and stays for the life of the import;
* one EndpointSlice per source cluster, address family and port set, with the MCS labels;
* the conditions of the local cluster's own ServiceExports.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from engine.core import events as ev
from engine.core import mcs

Obj = dict[str, Any]
Kind = Literal[
    "ServiceImport", "ServiceImportStatus", "Service", "EndpointSlice", "ServiceExportStatus"
]
ObjKey = tuple[Kind, str, str]
PortKey = tuple[tuple[str, str, int | None, str | None], ...]

MANAGED_BY: Final = "mcsync.io"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_SLICE_MANAGED_BY: Final = "endpointslice.kubernetes.io/managed-by"
LABEL_SERVICE_NAME: Final = "multicluster.kubernetes.io/service-name"
LABEL_SOURCE_CLUSTER: Final = "multicluster.kubernetes.io/source-cluster"
LABEL_K8S_SERVICE_NAME: Final = "kubernetes.io/service-name"
ANNOTATION_DERIVED: Final = "multicluster.kubernetes.io/derived-service"
MCS_API: Final = "multicluster.x-k8s.io/v1beta1"
MAX_ENDPOINTS_PER_SLICE: Final = 1000


def derived_name(namespace: str, name: str) -> str:
    """The reference implementation's derived Service name for ``namespace/name``."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return "derived-" + base64.b32hexencode(digest).decode().rstrip("=").lower()[:10]


@dataclass(frozen=True, slots=True)
class Allocated:
    """What the local cluster allocated for a derived Service."""

    cluster_ips: tuple[str, ...]
    ip_families: tuple[str, ...]


def desired_for_service(
    local_cluster: str,
    view: mcs.ServiceView,
    slices: Mapping[str, Mapping[str, ev.SliceUpserted]],
    exports: Mapping[str, ev.ExportUpserted],
    namespace_exists: bool,
    allocated: Allocated | None,
) -> dict[ObjKey, Obj]:
    """Every object the local cluster should hold for one service.

    Args:
        local_cluster: this cluster's id.
        view: the merged view of the service (:func:`engine.mcs.view`).
        slices: the source EndpointSlices of each cluster, by slice name.
        exports: each cluster's current export (to know which ports a cluster really serves).
        namespace_exists: whether the namespace exists locally (no import otherwise).
        allocated: the derived Service's allocation as observed, if it exists yet.
    """
    out: dict[ObjKey, Obj] = {}
    ns, name = view.namespace, view.name
    own = view.export_conditions.get(local_cluster)
    if own is not None:
        out[("ServiceExportStatus", ns, name)] = {
            "apiVersion": MCS_API,
            "kind": "ServiceExport",
            "metadata": {"name": name, "namespace": ns},
            "status": {"conditions": [_condition(c) for c in own]},
        }
    spec = view.spec
    if spec is None or not namespace_exists:
        return out
    derived = derived_name(ns, name)
    families = list(spec.ip_families)
    ips: list[str] = []
    if spec.type == "ClusterSetIP":
        out[("Service", ns, derived)] = _derived_service(ns, name, derived, spec)
        if allocated is not None and allocated.cluster_ips:
            ips = list(allocated.cluster_ips)
            families = list(allocated.ip_families) or families
    endpoint_slices = _endpoint_slices(ns, name, derived, view, spec, families, slices, exports)
    for s in endpoint_slices:
        out[("EndpointSlice", ns, s["metadata"]["name"])] = s
    annotations = dict(spec.annotations)
    if spec.type == "ClusterSetIP":
        annotations[ANNOTATION_DERIVED] = derived
    import_spec: Obj = {
        "type": spec.type,
        "ports": [_port(p) for p in spec.ports],
        "ipFamilies": families,
        "sessionAffinity": spec.session_affinity,
    }
    if ips:
        import_spec["ips"] = ips
    if spec.session_affinity_timeout is not None:
        import_spec["sessionAffinityConfig"] = {
            "clientIP": {"timeoutSeconds": spec.session_affinity_timeout}
        }
    if spec.internal_traffic_policy is not None:
        import_spec["internalTrafficPolicy"] = spec.internal_traffic_policy
    if spec.traffic_distribution is not None:
        import_spec["trafficDistribution"] = spec.traffic_distribution
    meta: Obj = {"name": name, "namespace": ns, "labels": dict(spec.labels)}
    if annotations:
        meta["annotations"] = annotations
    out[("ServiceImport", ns, name)] = {
        "apiVersion": MCS_API,
        "kind": "ServiceImport",
        "metadata": meta,
        "spec": import_spec,
    }
    if spec.type == "ClusterSetIP" and not ips:
        ready = mcs.Condition(
            "Ready", "False", "Pending", "Waiting for the derived Service's cluster IP"
        )
    else:
        ready = mcs.Condition("Ready", "True", "Ready", "Imported")
    out[("ServiceImportStatus", ns, name)] = {
        "apiVersion": MCS_API,
        "kind": "ServiceImport",
        "metadata": {"name": name, "namespace": ns},
        "status": {
            "clusters": [{"cluster": c} for c in view.clusters],
            "conditions": [_condition(ready)],
            "endpointSliceObjects": "Present" if endpoint_slices else "Absent",
        },
    }
    return out


def _condition(c: mcs.Condition) -> Obj:
    return {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}


def _port(p: ev.Port) -> Obj:
    out: Obj = {"name": p.name, "protocol": p.protocol, "port": p.port}
    if not p.name:
        del out["name"]
    if p.app_protocol:
        out["appProtocol"] = p.app_protocol
    return out


def _derived_service(ns: str, name: str, derived: str, spec: mcs.ImportSpec) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": derived,
            "namespace": ns,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SERVICE_NAME: name},
            "annotations": {"multicluster.kubernetes.io/service-import": name},
        },
        "spec": {
            "type": "ClusterIP",
            "ipFamilyPolicy": "PreferDualStack",
            "ports": [_port(p) for p in spec.ports],
        },
    }


def _endpoint_slices(
    ns: str,
    name: str,
    derived: str,
    view: mcs.ServiceView,
    spec: mcs.ImportSpec,
    families: list[str],
    slices: Mapping[str, Mapping[str, ev.SliceUpserted]],
    exports: Mapping[str, ev.ExportUpserted],
) -> list[Obj]:
    import_ports = {(p.name, p.protocol): p for p in spec.ports}
    out: list[Obj] = []
    for cluster in view.clusters:
        export = exports.get(cluster)
        served = {(p.name, p.protocol): p.port for p in export.ports} if export else {}
        # Ports this cluster really serves under the import's port numbers (StrictPortConflict).
        allowed = {key for key, p in import_ports.items() if served.get(key) == p.port}
        for family in families:
            groups: dict[
                tuple[tuple[str, str, int | None, str | None], ...], list[ev.Endpoint]
            ] = {}
            for source_name in sorted(slices.get(cluster, {})):
                source = slices[cluster][source_name]
                if source.address_type != family:
                    continue
                ports: PortKey = tuple(
                    sorted(
                        (p.name, str(p.protocol), p.port, p.app_protocol)
                        for p in source.ports
                        if (p.name, p.protocol) in allowed
                    )
                )
                groups.setdefault(ports, []).extend(source.endpoints)
            for ports, grouped in sorted(groups.items()):
                if not grouped:
                    continue
                endpoints = sorted(_dedupe(grouped), key=lambda e: e.addresses)
                base = f"{name}-{cluster}-{family.lower()}"
                if len(groups) > 1:
                    base += "-" + hashlib.sha256(repr(ports).encode()).hexdigest()[:6]
                chunks = [
                    endpoints[i : i + MAX_ENDPOINTS_PER_SLICE]
                    for i in range(0, len(endpoints), MAX_ENDPOINTS_PER_SLICE)
                ]
                for i, chunk in enumerate(chunks):
                    slice_name = base if i == 0 else f"{base}-{i}"
                    out.append(_slice(ns, name, derived, cluster, family, slice_name, ports, chunk))
    return out


def _dedupe(endpoints: Iterable[ev.Endpoint]) -> list[ev.Endpoint]:
    seen: dict[tuple[str, ...], ev.Endpoint] = {}
    for e in endpoints:
        seen.setdefault(e.addresses, e)
    return list(seen.values())


def _slice(
    ns: str,
    name: str,
    derived: str,
    cluster: str,
    family: str,
    slice_name: str,
    ports: PortKey,
    endpoints: list[ev.Endpoint],
) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name,
            "namespace": ns,
            "labels": {
                LABEL_SERVICE_NAME: name,
                LABEL_SOURCE_CLUSTER: cluster,
                LABEL_SLICE_MANAGED_BY: MANAGED_BY,
                LABEL_K8S_SERVICE_NAME: derived,
            },
        },
        "addressType": family,
        "endpoints": [_endpoint(e) for e in endpoints],
        "ports": [_endpoint_port(p) for p in ports],
    }


def _endpoint(e: ev.Endpoint) -> Obj:
    out: Obj = {"addresses": list(e.addresses)}
    conditions: Obj = {}
    for key, value in (("ready", e.ready), ("serving", e.serving), ("terminating", e.terminating)):
        if value is not None:
            conditions[key] = value
    out["conditions"] = conditions
    if e.hostname:
        out["hostname"] = e.hostname
    if e.zone:
        out["zone"] = e.zone
    return out


def _endpoint_port(p: tuple[str, str, int | None, str | None]) -> Obj:
    name, protocol, port, app_protocol = p
    out: Obj = {"name": name, "protocol": protocol}
    if port is not None:
        out["port"] = port
    if app_protocol:
        out["appProtocol"] = app_protocol
    return out


# --- comparing desired with observed -------------------------------------------------------


def with_transition_times(desired: list[Obj], observed: list[Obj] | None, now: str) -> list[Obj]:
    """Give each desired condition its ``lastTransitionTime``: the observed one while the
    status is unchanged, else ``now``."""
    before = {c.get("type"): c for c in observed or []}
    out = []
    for c in desired:
        prev = before.get(c["type"])
        when = (
            prev.get("lastTransitionTime") if prev and prev.get("status") == c["status"] else None
        )
        out.append({**c, "lastTransitionTime": when or now})
    return out


def covers(observed: Any, desired: Any) -> bool:
    """Whether ``observed`` already holds everything in ``desired``.

    Mappings may hold more keys than desired (server defaults, other managers); lists must
    match item for item. ``metadata.labels`` and ``metadata.annotations`` of objects whose
    labels mcsync owns whole are compared exactly by :func:`up_to_date`.
    """
    if isinstance(desired, dict):
        if not isinstance(observed, dict):
            return False
        return all(k in observed and covers(observed[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(observed) != len(desired):
            return False
        return all(covers(o, d) for o, d in zip(observed, desired, strict=True))
    return bool(observed == desired)


def status_covers(observed: Any, desired: Obj) -> bool:
    """Whether an observed ``status`` already holds the desired one.

    Like :func:`covers`, except that ``conditions`` is what the API says it is, a list-map keyed
    by ``type``: each desired condition must be there (in any position), and conditions of other
    types are left alone. Other field managers may own such conditions and server-side apply
    keeps them, and it may order merged items differently from the applied object; comparing
    position by position would then never agree, and every reconcile would write again.

    A condition type the caller stops setting is not noticed here (it counts as another
    manager's): use it where every type mcsync owns is always desired, as on ServiceExports
    (Valid, Ready, Conflict) and ServiceImports (Ready).
    """
    if not isinstance(observed, dict):
        return False
    for key, value in desired.items():
        if key == "conditions" and isinstance(value, list):
            seen = {
                c.get("type"): c for c in observed.get("conditions") or [] if isinstance(c, dict)
            }
            if not all(c["type"] in seen and covers(seen[c["type"]], c) for c in value):
                return False
        elif key not in observed or not covers(observed[key], value):
            return False
    return True


_OWN_WHOLE_METADATA: Final = frozenset({"ServiceImport"})


def up_to_date(kind: Kind, desired: Obj, observed: Obj | None) -> bool:
    """Whether a write can be skipped because ``observed`` already is what ``desired`` says."""
    if observed is None:
        return False
    if kind in _OWN_WHOLE_METADATA:
        dm, om = desired.get("metadata", {}), observed.get("metadata", {})
        if dict(dm.get("labels") or {}) != dict(om.get("labels") or {}):
            return False
        ignore = {"kubectl.kubernetes.io/last-applied-configuration"}
        oann = {k: v for k, v in (om.get("annotations") or {}).items() if k not in ignore}
        if dict(dm.get("annotations") or {}) != oann:
            return False
        return covers(observed.get("spec"), desired.get("spec"))
    if kind in ("ServiceImportStatus", "ServiceExportStatus"):
        return status_covers(observed.get("status"), desired.get("status") or {})
    stripped = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    return covers(observed, stripped)


# --- what the subscriber keeps of the objects it wrote -------------------------------------

IMPORT_CONDITION_TYPES: Final = frozenset({"Ready"})
"""The condition types mcsync sets on ServiceImports (others belong to other managers)."""

_SERVICE_LABELS: Final = (LABEL_MANAGED_BY, LABEL_SERVICE_NAME)
_SERVICE_ANNOTATIONS: Final = ("multicluster.kubernetes.io/service-import",)
_SLICE_LABELS: Final = (
    LABEL_SERVICE_NAME,
    LABEL_SOURCE_CLUSTER,
    LABEL_SLICE_MANAGED_BY,
    LABEL_K8S_SERVICE_NAME,
)
_IGNORED_ANNOTATIONS: Final = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


class Written(msgspec.Struct, gc=False):
    """What the subscriber keeps of an object it writes (derived Service, EndpointSlice,
    ServiceImport) instead of the object: about 170 bytes for a slice's.

    ``fingerprint`` (and ``status``, for an import) digests the fields mcsync manages as the
    cluster holds them; a desired object is current when its own fingerprint is the same
    (:func:`current`). ``version`` and ``uid`` tell our writes' echoes from others' changes
    and a re-created object from the one deleted; ``owner`` is the service the object belongs
    to; ``detail`` the little a plan reads back: a derived Service's allocation, an import's
    condition times. ``applied`` holds fingerprints of desired objects written at this
    ``version`` that the cluster shows differently (a field another manager or the server
    sets on top): they count as current until the object changes again.
    """

    version: int
    uid: int
    owner: tuple[str, str]
    fingerprint: bytes
    status: bytes | None = None
    detail: Allocated | tuple[tuple[str, str, str], ...] | None = None
    applied: tuple[bytes, ...] = ()


def _port_fields(ports: Any) -> list[tuple[Any, ...]]:
    return [
        (p.get("name") or "", p.get("protocol"), p.get("port"), p.get("appProtocol") or None)
        for p in ports or ()
        if isinstance(p, dict)
    ]


def _only(mapping: Any, keys: Iterable[str]) -> list[tuple[str, Any]]:
    mapping = mapping or {}
    return [(k, mapping.get(k)) for k in keys]


def _managed_fields(kind: Kind, obj: Obj) -> Any:
    """The fields of ``obj`` that mcsync manages for ``kind``, in a canonical form: the same
    for a desired object and the object the cluster holds when that one covers it."""
    meta = obj.get("metadata") or {}
    if kind == "Service":
        spec = obj.get("spec") or {}
        return (
            _only(meta.get("labels"), _SERVICE_LABELS),
            _only(meta.get("annotations"), _SERVICE_ANNOTATIONS),
            spec.get("type"),
            spec.get("ipFamilyPolicy"),
            _port_fields(spec.get("ports")),
        )
    if kind == "EndpointSlice":
        endpoints = []
        for e in obj.get("endpoints") or ():
            cond = e.get("conditions") or {}
            endpoints.append(
                (
                    e.get("addresses") or [],
                    cond.get("ready"),
                    cond.get("serving"),
                    cond.get("terminating"),
                    e.get("hostname"),
                    e.get("zone"),
                )
            )
        return (
            _only(meta.get("labels"), _SLICE_LABELS),
            obj.get("addressType"),
            endpoints,
            _port_fields(obj.get("ports")),
        )
    if kind == "ServiceImport":
        spec = obj.get("spec") or {}
        annotations = meta.get("annotations") or {}
        affinity = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        return (
            sorted((meta.get("labels") or {}).items()),
            sorted((k, v) for k, v in annotations.items() if k not in _IGNORED_ANNOTATIONS),
            spec.get("type"),
            _port_fields(spec.get("ports")),
            spec.get("ipFamilies") or [],
            spec.get("sessionAffinity"),
            spec.get("ips") or [],
            affinity.get("timeoutSeconds"),
            spec.get("internalTrafficPolicy"),
            spec.get("trafficDistribution"),
        )
    if kind == "ServiceImportStatus":
        status = obj.get("status") or {}
        conditions = sorted(
            (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
            for c in status.get("conditions") or ()
            if isinstance(c, dict) and c.get("type") in IMPORT_CONDITION_TYPES
        )
        return (
            [c.get("cluster") for c in status.get("clusters") or () if isinstance(c, dict)],
            conditions,
            status.get("endpointSliceObjects"),
        )
    raise ValueError(f"mcsync keeps no fingerprint of {kind}")


def fingerprint(kind: Kind, obj: Obj) -> bytes:
    """A digest of the fields mcsync manages in ``obj`` (desired or observed), 8 bytes."""
    encoded = msgspec.msgpack.encode(_managed_fields(kind, obj))
    return hashlib.blake2b(encoded, digest_size=8).digest()


def written(kind: Kind, obj: Obj, owner: tuple[str, str]) -> Written:
    """What to keep of an object of ``kind`` ("Service", "EndpointSlice" or "ServiceImport")
    as the cluster holds it."""
    meta = obj.get("metadata") or {}
    detail: Allocated | tuple[tuple[str, str, str], ...] | None = None
    status = None
    if kind == "Service":
        spec = obj.get("spec") or {}
        detail = Allocated(tuple(spec.get("clusterIPs") or ()), tuple(spec.get("ipFamilies") or ()))
    elif kind == "ServiceImport":
        status = fingerprint("ServiceImportStatus", obj)
        detail = tuple(
            (str(c["type"]), str(c.get("status", "")), str(c.get("lastTransitionTime", "")))
            for c in (obj.get("status") or {}).get("conditions") or ()
            if isinstance(c, dict) and c.get("type") in IMPORT_CONDITION_TYPES
        )
    return Written(
        version=int(meta.get("resourceVersion") or 0),
        uid=hash(meta.get("uid", "")),
        owner=owner,
        fingerprint=fingerprint(kind, obj),
        status=status,
        detail=detail,
    )


def current(kind: Kind, desired: Obj, observed: Written | None) -> bool:
    """Whether a write of ``desired`` can be skipped: what the cluster holds (as kept in
    ``observed``) already has it."""
    return observed is not None and holds(kind, fingerprint(kind, desired), observed)


def holds(kind: Kind, digest: bytes, observed: Written) -> bool:
    """Whether the object kept as ``observed`` holds a desired one whose fingerprint is
    ``digest``."""
    held = observed.status if kind == "ServiceImportStatus" else observed.fingerprint
    return digest == held or digest in observed.applied


def observed_conditions(observed: Written | None) -> list[Obj]:
    """An import's conditions of the types mcsync sets, as kept (for their transition times)."""
    if observed is None or not isinstance(observed.detail, tuple):
        return []
    return [{"type": t, "status": s, "lastTransitionTime": at} for t, s, at in observed.detail]
