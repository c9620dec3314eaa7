"""The API-level cases of the MCS conformance suite (kubernetes-sigs/mcs-api ``conformance/``,
v0.5.0; specs/mcs-api.md §8, tests 1-16), on three real apiservers and a real NATS.

The fixture mirrors the upstream one: a fresh namespace in every cluster; Service ``hello``
(ports tcp/42/TCP and udp/42/UDP, ClientIP affinity with a 10 s timeout, ``dummy-svc`` labels and
annotations) and ServiceExport ``hello`` (``dummy-svcexport`` labels and annotations) in
cluster-1, the suite's "cluster 0". Two-cluster cases export in cluster-1, wait for its import,
sleep 1.1 s (so creation timestamps decide precedence), then export in cluster-2. Timing bounds
are the suite's: imports within 20 s, "must stay" checks held for 5 s, conditions within 20 s,
EndpointSlices within 60 s. There are no pods here, so case 16 uses a hand-made EndpointSlice.
Cases 17-27 need pods, a data plane or DNS and are not API-level.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest

from engine import kube
from tests.conftest import ClusterSet
from tests.integration.conftest import (
    Members,
    endpoint_slice,
    eventually,
    export_condition,
    get_import,
    hello_export,
    hello_service,
    holds,
    imports_in,
    mcs_slices,
    no_import_in,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_namespaces")]

IMPORT_TIMEOUT = 20.0
CONDITION_TIMEOUT = 20.0
SLICE_TIMEOUT = 60.0
HOLD = 5.0

HELLO_PORTS = [
    {"name": "tcp", "protocol": "TCP", "port": 42},
    {"name": "udp", "protocol": "UDP", "port": 42},
]


# --- the driver ----------------------------------------------------------------------------


async def export_hello(
    cs: ClusterSet,
    cluster: str,
    ns: str,
    service: kube.Obj | None = None,
    **export_spec: Any,
) -> None:
    """Deploy Service ``hello`` (the fixture's, unless given) in ``cluster`` and export it."""
    k = cs[cluster].kube
    await k.create(kube.SERVICES, service or hello_service(ns))
    await k.create(kube.SERVICE_EXPORTS, hello_export(ns, **export_spec))


async def export_on_two_clusters(
    cs: ClusterSet,
    ns: str,
    service2: kube.Obj | None = None,
    export1: dict[str, Any] | None = None,
    export2: dict[str, Any] | None = None,
) -> None:
    """The two-cluster driver: export on cluster-1, await its import, sleep 1.1 s, export on
    cluster-2."""
    await export_hello(cs, "cluster-1", ns, **(export1 or {}))
    await eventually(lambda: get_import(cs, "cluster-1", ns), IMPORT_TIMEOUT)
    await asyncio.sleep(1.1)
    await export_hello(cs, "cluster-2", ns, service2, **(export2 or {}))


async def unexport(cs: ClusterSet, cluster: str, ns: str) -> None:
    assert await cs[cluster].kube.delete(kube.SERVICE_EXPORTS, ns, "hello")


async def await_import(
    cs: ClusterSet, cluster: str, ns: str, verify: Callable[[kube.Obj], bool] | None = None
) -> kube.Obj:
    """The import in ``cluster`` once it exists (and passes ``verify``), within 20 s."""

    async def probe() -> kube.Obj | None:
        imp = await get_import(cs, cluster, ns)
        return imp if imp is not None and (verify is None or verify(imp)) else None

    return await eventually(probe, IMPORT_TIMEOUT)


async def await_imports_everywhere(
    cs: ClusterSet, ns: str, verify: Callable[[kube.Obj], bool] | None = None
) -> dict[str, kube.Obj]:
    return {c.name: await await_import(cs, c.name, ns, verify) for c in cs.clusters}


async def await_condition(
    cs: ClusterSet, cluster: str, ns: str, ctype: str, status: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        c = await export_condition(cs, cluster, ns, ctype)
        return c if c is not None and c["status"] == status else None

    return await eventually(probe, CONDITION_TIMEOUT)


def sorted_ports(imp: kube.Obj) -> list[dict[str, Any]]:
    """The import's ports sorted by name, case-insensitively (``sortMCSPorts``)."""
    return sorted(imp["spec"]["ports"], key=lambda p: str(p.get("name", "")).lower())


def has(actual: dict[str, str] | None, expected: dict[str, str]) -> bool:
    return all((actual or {}).get(k) == v for k, v in expected.items())


def has_none_of(actual: dict[str, str] | None, unexpected: dict[str, str]) -> bool:
    return not any((actual or {}).get(k) == v for k, v in unexpected.items())


# --- general -------------------------------------------------------------------------------


async def test_an_import_exists_as_long_as_one_cluster_exports(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #1: "A ServiceImport should only exist as long as there's at least one
    exporting cluster"."""
    cs = mcsync.cs
    await export_on_two_clusters(cs, namespace)
    await holds(lambda: get_import(cs, "cluster-1", namespace), HOLD)

    await unexport(cs, "cluster-1", namespace)
    await holds(lambda: imports_in(cs, namespace), HOLD)

    await unexport(cs, "cluster-2", namespace)
    await eventually(lambda: no_import_in(cs, namespace), IMPORT_TIMEOUT)


async def test_only_exported_labels_and_annotations_reach_the_import(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #2: "Only labels and annotations specified as exported in the ServiceExport
    should be propagated to the ServiceImport"."""
    cs = mcsync.cs
    exported = {"dummy-label": "true"}, {"dummy-annotation": "true"}
    await export_hello(
        cs,
        "cluster-1",
        namespace,
        exportedLabels=exported[0],
        exportedAnnotations=exported[1],
    )
    never = {"dummy-svc": "true", "dummy-svcexport": "true"}

    def verify(imp: kube.Obj) -> bool:
        meta = imp["metadata"]
        return (
            has(meta.get("labels"), exported[0])
            and has(meta.get("annotations"), exported[1])
            and has_none_of(meta.get("labels"), never)
            and has_none_of(meta.get("annotations"), never)
        )

    await await_imports_everywhere(cs, namespace, verify)


async def test_conflicting_exported_labels_take_the_oldest_exports_and_raise_a_conflict(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #3: "A service exported on two clusters with conflicting annotations and
    labels should apply the conflict resolution policy and report a Conflict condition on each
    ServiceExport"."""
    cs = mcsync.cs
    labels1, annotations1 = {"dummy-label": "true"}, {"dummy-annotation": "true"}
    labels2, annotations2 = {"dummy-label2": "true"}, {"dummy-annotation2": "true"}
    await export_on_two_clusters(
        cs,
        namespace,
        export1={"exportedLabels": labels1, "exportedAnnotations": annotations1},
        export2={"exportedLabels": labels2, "exportedAnnotations": annotations2},
    )
    for cluster in ("cluster-1", "cluster-2"):
        conflict = await await_condition(cs, cluster, namespace, "Conflict", "True")
        assert set(conflict["reason"].split(",")) == {"LabelsConflict", "AnnotationsConflict"}

    def verify(imp: kube.Obj) -> bool:
        meta = imp["metadata"]
        return (
            has(meta.get("labels"), labels1)
            and has(meta.get("annotations"), annotations1)
            and has_none_of(meta.get("labels"), labels2)
            and has_none_of(meta.get("annotations"), annotations2)
        )

    await await_imports_everywhere(cs, namespace, verify)


# --- ClusterIP -----------------------------------------------------------------------------


async def test_an_exported_clusterip_service_is_a_clustersetip_import_everywhere_until_unexported(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #4: "Exporting a ClusterIP service should create a ServiceImport of type
    ClusterSetIP in the service's namespace in each cluster. Unexporting should delete the
    ServiceImport"."""
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace)
    valid = await await_condition(cs, "cluster-1", namespace, "Valid", "True")
    assert valid["reason"] == "Valid"
    for cluster, imp in (await await_imports_everywhere(cs, namespace)).items():
        assert imp["spec"]["type"] == "ClusterSetIP", cluster

    await unexport(cs, "cluster-1", namespace)
    for c in cs.clusters:
        await eventually(functools.partial(no_import_in, cs, namespace, [c.name]), IMPORT_TIMEOUT)


async def test_the_import_has_the_session_affinity_of_the_exported_service(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #5: "The SessionAffinity for a ClusterSetIP ServiceImport should match the
    exported service's SessionAffinity"."""
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace)
    imp = await await_import(cs, "cluster-1", namespace)
    assert imp["spec"]["sessionAffinity"] == "ClientIP"
    assert imp["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10}}


async def test_the_import_has_the_internal_traffic_policy_of_the_exported_service(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #6: "The InternalTrafficPolicy for a ClusterSetIP ServiceImport should match
    the exported service's InternalTrafficPolicy"."""
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace)
    imp = await await_import(cs, "cluster-1", namespace)
    svc = await cs["cluster-1"].kube.get(kube.SERVICES, namespace, "hello")
    assert svc is not None
    assert svc["spec"]["internalTrafficPolicy"] == "Cluster"  # the API's default
    assert imp["spec"]["internalTrafficPolicy"] == "Cluster"


async def test_the_import_has_the_traffic_distribution_of_the_exported_service(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #7: "The TrafficDistribution for a ClusterSetIP ServiceImport should match
    the exported service's TrafficDistribution"."""
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace)
    imp = await await_import(cs, "cluster-1", namespace)
    assert imp["spec"]["trafficDistribution"] == "PreferClose"


async def test_a_clustersetip_import_gets_an_ip_for_each_ip_family(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #8: "An IP should be allocated for a ClusterSetIP ServiceImport for each IP
    family"."""
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace)
    imp = await await_import(cs, "cluster-1", namespace, lambda i: bool(i["spec"].get("ips")))
    ips, families = imp["spec"]["ips"], imp["spec"]["ipFamilies"]
    assert len(ips) == len(families)
    for ip, family in zip(ips, families, strict=True):
        assert f"IPv{ipaddress.ip_address(ip).version}" == family


async def test_the_import_ports_match_the_exported_service(mcsync: Members, namespace: str) -> None:
    """Conformance #9: "The ports for a ClusterSetIP ServiceImport should match those of the
    exported service"."""
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace)
    await await_import(cs, "cluster-1", namespace, lambda i: sorted_ports(i) == HELLO_PORTS)


async def test_a_service_exported_on_two_clusters_exposes_the_union_of_ports_and_a_conflict(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #10: "A ClusterIP service exported on two clusters ... should expose the
    union of the constituent service ports and raise a conflict"."""
    cs = mcsync.cs
    ports2 = [HELLO_PORTS[0], {"name": "stcp", "protocol": "SCTP", "port": 142}]
    await export_on_two_clusters(cs, namespace, hello_service(namespace, ports=ports2))
    for cluster in ("cluster-1", "cluster-2"):
        conflict = await await_condition(cs, cluster, namespace, "Conflict", "True")
        assert conflict["reason"] == "PortConflict"
    union = [ports2[1], *HELLO_PORTS]
    await await_imports_everywhere(cs, namespace, lambda i: sorted_ports(i) == union)


async def test_conflicting_ports_resolve_to_the_oldest_export_and_raise_a_conflict(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #11: "A ClusterIP service exported on two clusters with conflicting ports
    should apply the conflict resolution policy and report a Conflict condition on each
    ServiceExport"."""
    cs = mcsync.cs
    ports2 = [{"name": "tcp", "protocol": "TCP", "port": 43}]
    await export_on_two_clusters(cs, namespace, hello_service(namespace, ports=ports2))
    for cluster in ("cluster-1", "cluster-2"):
        conflict = await await_condition(cs, cluster, namespace, "Conflict", "True")
        assert conflict["reason"] == "PortConflict"
    await await_imports_everywhere(cs, namespace, lambda i: sorted_ports(i) == HELLO_PORTS)


# --- Headless ------------------------------------------------------------------------------


async def test_an_exported_headless_service_is_imported_as_headless_everywhere_until_unexported(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #12: "Exporting a headless service should create a ServiceImport of type
    Headless in the service's namespace in each cluster. Unexporting should delete the
    ServiceImport"."""
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace, hello_service(namespace, clusterIP="None"))
    for cluster, imp in (await await_imports_everywhere(cs, namespace)).items():
        assert imp["spec"]["type"] == "Headless", cluster

    await unexport(cs, "cluster-1", namespace)
    for c in cs.clusters:
        await eventually(functools.partial(no_import_in, cs, namespace, [c.name]), IMPORT_TIMEOUT)


async def test_a_headless_import_gets_no_clusterset_ip(mcsync: Members, namespace: str) -> None:
    """Conformance #13: "No clusterset IP should be allocated for a Headless ServiceImport"."""
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace, hello_service(namespace, clusterIP="None"))
    await await_import(cs, "cluster-1", namespace)

    async def no_ips() -> bool:
        imp = await get_import(cs, "cluster-1", namespace)
        return imp is not None and not imp["spec"].get("ips")

    await holds(no_ips, HOLD)


# --- ExternalName --------------------------------------------------------------------------


async def test_an_exported_externalname_service_is_not_valid_and_not_imported(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #14: "Exporting an ExternalName service should set ServiceExport Valid
    condition to False"."""
    cs = mcsync.cs
    external = hello_service(
        namespace, type="ExternalName", externalName="example.com", ipFamilyPolicy=None
    )
    await export_hello(cs, "cluster-1", namespace, external)
    await await_condition(cs, "cluster-1", namespace, "Valid", "False")
    await holds(lambda: no_import_in(cs, namespace), HOLD)


# --- type conflict -------------------------------------------------------------------------


async def test_conflicting_headlessness_resolves_to_the_oldest_export_and_raises_a_conflict(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #15: "A service exported on two clusters with conflicting headlessness should
    apply the conflict resolution policy and report a Conflict condition on the
    ServiceExport"."""
    cs = mcsync.cs
    await export_on_two_clusters(cs, namespace, hello_service(namespace, clusterIP="None"))
    for cluster in ("cluster-1", "cluster-2"):
        conflict = await await_condition(cs, cluster, namespace, "Conflict", "True")
        assert conflict["reason"] == "TypeConflict"
    for cluster, imp in (await await_imports_everywhere(cs, namespace)).items():
        assert imp["spec"]["type"] == "ClusterSetIP", cluster


# --- EndpointSlices ------------------------------------------------------------------------


async def test_an_export_creates_labelled_mcs_endpoint_slices_everywhere_until_unexported(
    mcsync: Members, namespace: str
) -> None:
    """Conformance #16: "Exporting a service should create an MCS EndpointSlice in the
    service's namespace in each cluster with the required MCS labels. Unexporting should delete
    the EndpointSlice."

    There is no endpoints controller: the ready backend is a native EndpointSlice made by hand.
    """
    cs = mcsync.cs
    await export_hello(cs, "cluster-1", namespace)
    await cs["cluster-1"].kube.create(
        kube.ENDPOINT_SLICES, endpoint_slice(namespace, "hello", "hello-x7k2p", ["10.1.0.5"])
    )
    recorded: dict[str, list[str]] = {}
    for c in cs.clusters:
        # awaitServiceImportIPFamilies: the slice checks start once ipFamilies is filled.
        imp = await await_import(cs, c.name, namespace, lambda i: bool(i["spec"].get("ipFamilies")))
        families = imp["spec"]["ipFamilies"]

        async def slices_per_family(
            cluster: str = c.name, families: list[str] = families
        ) -> list[kube.Obj] | None:
            found = []
            for family in families:
                match = [
                    s
                    for s in await mcs_slices(cs, cluster, namespace)
                    if s["addressType"] == family
                    and "multicluster.kubernetes.io/source-cluster" in s["metadata"]["labels"]
                    and s.get("endpoints")
                ]
                if not match:
                    return None
                found.extend(match)
            return found

        slices = await eventually(slices_per_family, SLICE_TIMEOUT)
        for s in slices:
            labels = s["metadata"]["labels"]
            assert labels["multicluster.kubernetes.io/service-name"] == "hello"
            assert labels["multicluster.kubernetes.io/source-cluster"] == "cluster-1"
            managed_by = labels["endpointslice.kubernetes.io/managed-by"]
            assert managed_by and managed_by != "endpointslice-controller.k8s.io"
        recorded[c.name] = [s["metadata"]["name"] for s in slices]

    await unexport(cs, "cluster-1", namespace)
    for cluster, names in recorded.items():
        for name in names:

            async def gone(cluster: str = cluster, name: str = name) -> bool:
                return await cs[cluster].kube.get(kube.ENDPOINT_SLICES, namespace, name) is None

            await eventually(gone, IMPORT_TIMEOUT)
