"""What the subscriber keeps of an object it wrote (``plan.Written``) decides like the object
would: a desired object is current exactly when the cluster's copy covers it, server defaults
and other managers' additions included, and a change to any field mcsync sets is seen."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.core import events as ev
from engine.core import mcs, plan

NS, NAME = "team", "web"
ALLOCATED = plan.Allocated(("10.96.0.10",), ("IPv4",))


def desired() -> dict[plan.ObjKey, plan.Obj]:
    exports = {
        c: ev.ExportUpserted(
            cluster=c,
            namespace=NS,
            name=NAME,
            uid=f"uid-{c}",
            created=datetime(2026, 1, 1, tzinfo=UTC),
            ports=(ev.Port(80, "TCP", "http"), ev.Port(443, "TCP", "https", "kubernetes.io/h2c")),
            internal_traffic_policy="Cluster",
            ip_families=("IPv4",),
            exported_labels={"app": NAME},
            exported_annotations={"owner": "team"},
        )
        for c in ("east", "west")
    }
    slices = {
        c: {
            f"{NAME}-abc": ev.SliceUpserted(
                cluster=c,
                namespace=NS,
                service=NAME,
                name=f"{NAME}-abc",
                address_type="IPv4",
                endpoints=(
                    ev.Endpoint(("10.1.0.1",), ready=True, serving=True, zone="z1"),
                    ev.Endpoint(("10.1.0.2",), ready=False, hostname="b"),
                ),
                ports=(ev.EndpointPort(8080, "TCP", "http"), ev.EndpointPort(8443, "TCP", "https")),
            )
        }
        for c in exports
    }
    members = frozenset(exports)
    view = mcs.view(NS, NAME, exports, members, members)
    return plan.desired_for_service("local", view, slices, exports, True, ALLOCATED)


def as_served(kind: plan.Kind, obj: plan.Obj) -> plan.Obj:
    """``obj`` as the apiserver answers it: metadata, defaults and another manager's bits."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    meta.update(
        uid="0b6c1e3f-0000-4000-8000-000000000001",
        resourceVersion="4711",
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{"manager": "mcsync", "operation": "Apply"}],
    )
    if kind == "Service":
        spec = out["spec"]
        spec.update(
            clusterIP="10.96.0.10",
            clusterIPs=["10.96.0.10"],
            ipFamilies=["IPv4"],
            sessionAffinity="None",
            internalTrafficPolicy="Cluster",
        )
        for p in spec["ports"]:
            p["targetPort"] = p["port"]
        meta["labels"]["example.com/team"] = "a"  # another manager's label
    if kind == "EndpointSlice":
        meta["labels"]["example.com/team"] = "a"
        meta["generation"] = 1
    if kind == "ServiceImportStatus":
        out["status"]["conditions"] = [
            {"type": "example.com/Audited", "status": "True", "reason": "x", "message": ""},
            *(
                {**c, "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}
                for c in out["status"]["conditions"]
            ),
        ]
    return out


def kept(kind: plan.Kind, obj: plan.Obj) -> plan.Written:
    return plan.written("ServiceImport" if kind == "ServiceImportStatus" else kind, obj, (NS, NAME))


KINDS: list[plan.Kind] = ["Service", "ServiceImport", "ServiceImportStatus", "EndpointSlice"]


def one(kind: plan.Kind) -> plan.Obj:
    return next(o for k, o in desired().items() if k[0] == kind)


@pytest.mark.parametrize("kind", KINDS)
def test_the_served_copy_of_a_desired_object_is_current(kind: plan.Kind) -> None:
    obj = one(kind)
    served = as_served(kind, obj)
    assert plan.current(kind, obj, kept(kind, served))
    assert plan.up_to_date(kind, obj, served)  # the whole-object comparison agrees


def _set(path: list[Any], value: Any) -> Callable[[plan.Obj], None]:
    def edit(obj: plan.Obj) -> None:
        node = obj
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    return edit


EDITS: list[tuple[plan.Kind, str, Callable[[plan.Obj], None]]] = [
    ("Service", "port", _set(["spec", "ports", 0, "port"], 81)),
    ("Service", "type", _set(["spec", "type"], "NodePort")),
    ("Service", "label", _set(["metadata", "labels", plan.LABEL_SERVICE_NAME], "other")),
    ("EndpointSlice", "address", _set(["endpoints", 0, "addresses"], ["10.9.9.9"])),
    ("EndpointSlice", "ready", _set(["endpoints", 1, "conditions", "ready"], True)),
    ("EndpointSlice", "zone", _set(["endpoints", 0, "zone"], "z2")),
    ("EndpointSlice", "port", _set(["ports", 0, "port"], 1)),
    ("EndpointSlice", "source", _set(["metadata", "labels", plan.LABEL_SOURCE_CLUSTER], "x")),
    ("EndpointSlice", "one-gone", lambda o: o["endpoints"].pop()),
    ("ServiceImport", "ips", _set(["spec", "ips"], ["10.66.0.1"])),
    ("ServiceImport", "label", _set(["metadata", "labels", "app"], "other")),
    ("ServiceImport", "extra-label", _set(["metadata", "labels", "more"], "x")),
    ("ServiceImport", "annotation", _set(["metadata", "annotations", "owner"], "x")),
    ("ServiceImport", "affinity", _set(["spec", "sessionAffinity"], "ClientIP")),
    ("ServiceImport", "app-protocol", _set(["spec", "ports", 1, "appProtocol"], "h3")),
    ("ServiceImportStatus", "ready", _set(["status", "conditions", 1, "status"], "False")),
    ("ServiceImportStatus", "clusters", _set(["status", "clusters"], [{"cluster": "east"}])),
    ("ServiceImportStatus", "slices", _set(["status", "endpointSliceObjects"], "Absent")),
]


@pytest.mark.parametrize(
    ("kind", "edit"), [(k, e) for k, _, e in EDITS], ids=[i for _, i, _ in EDITS]
)
def test_an_edit_of_a_field_mcsync_sets_is_seen(
    kind: plan.Kind, edit: Callable[[plan.Obj], None]
) -> None:
    obj = one(kind)
    served = as_served(kind, obj)
    edit(served)
    assert not plan.current(kind, obj, kept(kind, served))
    assert not plan.up_to_date(kind, obj, served)  # the whole-object comparison agrees


def test_what_was_written_counts_as_current_until_the_object_changes() -> None:
    obj = one("Service")
    served = as_served("Service", obj)
    served["spec"]["ports"][0]["appProtocol"] = "h2c"  # another manager's, kept by the apply
    held = kept("Service", served)
    assert not plan.current("Service", obj, held)
    held.applied = (plan.fingerprint("Service", obj),)
    assert plan.current("Service", obj, held)


def test_what_is_kept_is_small_and_carries_what_a_plan_reads_back() -> None:
    service = kept("Service", as_served("Service", one("Service")))
    assert service.detail == ALLOCATED
    status = as_served("ServiceImportStatus", one("ServiceImportStatus"))
    imp = kept("ServiceImport", status)
    assert plan.observed_conditions(imp) == [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    ]
    assert service.version == 4711 and service.owner == (NS, NAME)
